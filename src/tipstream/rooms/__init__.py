"""Live rooms: streams, the Janus SFU client, signaling, TURN credentials, realtime chat."""
