// placeholder while the page is built
import "../shell.js";
