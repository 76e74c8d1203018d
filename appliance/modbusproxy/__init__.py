"""The modbusproxy role: a transparent Modbus TCP proxy that checks every request of a
restricted conduit (`inspect`, pure) before it reaches the PLC (`role`, the process)."""
