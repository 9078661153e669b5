"""Local question answering: the OpenAI-compatible server (continuous batching), and the batched
answering of `mlx-distill ask` and `mlx-distill answer`."""

from mlx_distill.serve.address import SERVERS_FOLDER, serve_command, server_address, server_addresses
from mlx_distill.serve.answers import Answer, Question, TooLong, answer_batch, check_explainable
from mlx_distill.serve.requests import ApiError, Limits
from mlx_distill.serve.server import ServeOptions, StudentServer, host_warning, model_name, run_folder_of
from mlx_distill.serve.worker import GenerationWorker

__all__ = ["SERVERS_FOLDER", "Answer", "ApiError", "GenerationWorker", "Limits", "Question", "ServeOptions",
           "StudentServer", "TooLong", "answer_batch", "check_explainable", "host_warning", "model_name",
           "run_folder_of", "serve_command", "server_address", "server_addresses"]
