"""`python -m appliance.fleet` is `appliance fleet`."""

from appliance.fleet.cli import main

main()
