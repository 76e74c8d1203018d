"""The agent role: health state, LEDs, heartbeat to the fleet, syslog out."""
