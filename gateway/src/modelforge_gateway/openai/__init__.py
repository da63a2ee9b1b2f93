"""The OpenAI-compatible API (/v1): files, fine-tuning jobs, models, chat and text completions."""

from modelforge_gateway.openai.errors import install_openai_error_handlers
from modelforge_gateway.openai.routes import router

__all__ = ["install_openai_error_handlers", "router"]
