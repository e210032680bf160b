"""The agent's own OPC UA server: every camera's last verdict, counters and health, read-only, for SCADA, MES and
UaExpert (docs/opcua.md). :mod:`.nodemap` is the address space as data, :mod:`.users` the user list,
:mod:`.server` the asyncua server in its own thread."""
