"""The lab: the appliance's world (IT host, appliance, OT network with PLCs) in netns."""
