"""HTTP service: FastAPI app over the copilot core library."""
