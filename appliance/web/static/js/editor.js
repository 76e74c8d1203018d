// A plain textarea with a line-number gutter whose numbers turn red on lines with errors;
// jumping to a line selects it. No editor library: it must work offline and stay small.

export function lineEditor(textarea, gutter) {
  let errLines = new Set();
  function paint() {
    const n = textarea.value.split("\n").length;
    const frag = document.createDocumentFragment();
    for (let i = 1; i <= n; i += 1) {
      const d = document.createElement("div");
      d.textContent = String(i);
      if (errLines.has(i)) {
        d.className = "err";
        d.dataset.errLine = String(i);
      }
      frag.append(d);
    }
    gutter.replaceChildren(frag);
    gutter.scrollTop = textarea.scrollTop;
  }
  textarea.addEventListener("input", paint);
  textarea.addEventListener("scroll", () => {
    gutter.scrollTop = textarea.scrollTop;
  });
  textarea.addEventListener("keydown", (ev) => {
    if (ev.key === "Tab" && !ev.shiftKey && !ev.ctrlKey && !ev.altKey) {
      // two spaces, as YAML wants; Escape then Tab leaves the field (keyboard users)
      if (textarea.dataset.tabEscape === "1") return;
      ev.preventDefault();
      textarea.setRangeText("  ", textarea.selectionStart, textarea.selectionEnd, "end");
      paint();
    } else if (ev.key === "Escape") {
      textarea.dataset.tabEscape = "1";
    } else {
      textarea.dataset.tabEscape = "0";
    }
  });
  return {
    set(text) {
      textarea.value = text;
      errLines = new Set();
      paint();
    },
    get: () => textarea.value,
    markErrors(lines) {
      errLines = new Set(lines.filter((x) => Number.isInteger(x)));
      paint();
    },
    goto(line) {
      const lines = textarea.value.split("\n");
      const start = lines.slice(0, line - 1).reduce((a, l) => a + l.length + 1, 0);
      const end = start + (lines[line - 1] || "").length;
      textarea.focus();
      textarea.setSelectionRange(start, end);
      const lh = 18;
      textarea.scrollTop = Math.max(0, (line - 5) * lh);
    },
  };
}
