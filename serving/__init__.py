"""TF Serving side: client, local server and deployment configs (in progress)."""
