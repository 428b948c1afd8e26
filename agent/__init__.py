"""voice-agent: the daemon that runs on the Raspberry Pi (no TensorFlow here)."""

__version__ = "0.1.0"
