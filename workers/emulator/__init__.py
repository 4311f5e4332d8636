"""A loopback emulator of model backends (TGI, Ollama, OpenAI-compatible) for tests and demos.

    from workers.emulator import EmulatedModel, Fault, EmulatorServer, DEMO_MODELS

    server = EmulatorServer(models=DEMO_MODELS).start()
    server.url_for("tgi", "demo-terse-7b")     # http://127.0.0.1:<port>/tgi/demo-terse-7b
    server.url_for("ollama", "demo-terse-7b")  # http://127.0.0.1:<port>/ollama
    server.url_for("openai", "demo-terse-7b")  # http://127.0.0.1:<port>/openai
    server.set_fault("demo-terse-7b", Fault(kind="error_mid_stream", after_tokens=5))
    server.stop()
"""
from .config import DEMO_MODELS, FAULT_KINDS, STYLES, EmulatedModel, Fault
from .server import KINDS, EmulatorServer

__all__ = ["DEMO_MODELS", "FAULT_KINDS", "KINDS", "STYLES", "EmulatedModel", "EmulatorServer", "Fault"]
