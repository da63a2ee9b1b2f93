"""The OpenAI-compatible API (/v1): files, fine-tuning jobs, models, chat and text completions.

routes.router is the APIRouter; errors.install_openai_error_handlers gives /v1 OpenAI's error shape.
(Nothing is imported here: auth.py imports errors.py, and routes.py imports the dependencies that
import auth.py.)"""
