"""The opcua role: the northbound OPC UA server in a process of its own."""
