"""Stand-ins for what cannot run here (an Ollama server with LLaVA) and helpers that run the real
servers (the escalation gateway) in a background thread for synchronous tests."""
