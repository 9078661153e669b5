"""Push an exported student folder to the Hugging Face hub (``create_repo`` + ``upload_folder``).

The token comes from where huggingface_hub looks (``HF_TOKEN``, then ``hf auth login``'s file);
``HF_ENDPOINT`` or ``endpoint=`` points at another hub. An unchanged file is not uploaded again:
the hub reports what it holds and huggingface_hub skips it, so a second push of an unchanged
folder makes no commit. Failures a user can fix are one line: no token, no network, a repo that
belongs to someone else.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path

from mlx_distill.errors import DistillError

_FIX_OWNER = "push to a repo under your own name or an organization you can write to"


@dataclass(frozen=True)
class PushPlan:
    """What a push sends: every file of the folder, with its size."""

    folder: Path
    repo_id: str
    private: bool
    files: list[tuple[str, int]] = field(default_factory=list)

    @property
    def total_bytes(self) -> int:
        return sum(size for _, size in self.files)


def check_repo_id(repo_id: str) -> str:
    """``repo_id`` when it is a hub model repo id with an owner (``NAME/REPO``); nothing is sent.

    Raises:
        DistillError: one line with an example of a good id.
    """
    from huggingface_hub.errors import HFValidationError  # huggingface_hub is slow to import
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        raise DistillError(f"{repo_id!r} is not a hub repo id; use NAME/REPO, e.g. yourname/svamp-student") from None
    if "/" not in repo_id:
        raise DistillError(f"{repo_id!r} has no owner; use NAME/REPO, e.g. yourname/{repo_id}")
    return repo_id


def plan_push(folder: str | Path, repo_id: str, private: bool = False) -> PushPlan:
    """List what pushing ``folder`` to ``repo_id`` would upload (the dry run); nothing is sent.

    Raises:
        DistillError: a bad repo id, or a folder that is not an exported student with its card.
    """
    folder = Path(folder)
    check_repo_id(repo_id)
    for needed in ("config.json", "README.md"):
        if not (folder / needed).is_file():
            raise DistillError(f"{folder} has no {needed}; export the student first (mlx-distill export RUN)")
    files = sorted((str(p.relative_to(folder)), p.stat().st_size) for p in folder.rglob("*")
                   if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts))
    return PushPlan(folder, repo_id, private, files)


def find_token() -> str:
    """The user's hub token; DistillError (one line, with the fix) when there is none."""
    from huggingface_hub import get_token

    token = get_token()
    if not token:
        raise DistillError("no Hugging Face token: log in with `hf auth login` or set HF_TOKEN, then push again")
    return token


def _transport_errors() -> tuple[type[Exception], ...]:
    """The no-network errors of the HTTP client huggingface_hub uses: httpx2 (hub 2.x) or httpx
    (hub 1.x). The hub raises them as they are: its own errors are for the answers it gets."""
    errors = []
    for client in ("httpx2", "httpx"):
        try:
            errors.append(importlib.import_module(client).TransportError)
        except ImportError:
            continue
    return tuple(errors)


def push_folder(plan: PushPlan, token: str | None = None, endpoint: str | None = None) -> str:
    """Create the repo (if new) and upload the folder; return the commit's URL.

    Args:
        plan: From ``plan_push``.
        token: A hub token. Default: ``find_token()``.
        endpoint: The hub's URL. Default: ``HF_ENDPOINT`` or huggingface.co.

    Raises:
        DistillError: no token, the hub not reachable, the token refused, a repo owned by someone
            else, offline mode on; one line each.
    """
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    token = token or find_token()
    unreachable = _transport_errors()
    api = HfApi(endpoint=endpoint, token=token)
    where = api.endpoint
    try:
        api.create_repo(plan.repo_id, private=plan.private, exist_ok=True, repo_type="model")
        commit = api.upload_folder(folder_path=str(plan.folder), repo_id=plan.repo_id, repo_type="model",
                                   commit_message="Upload a student distilled with mlx-distill",
                                   ignore_patterns=[".*", "**/.*"])
    except OfflineModeIsEnabled:
        raise DistillError("HF_HUB_OFFLINE is set, so nothing can be pushed; unset it and push again") from None
    except HfHubHTTPError as error:
        status = error.response.status_code if error.response is not None else None
        if status == 401:
            raise DistillError(f"the hub at {where} refused the token (401); log in again with `hf auth login` "
                               "or set a valid HF_TOKEN") from None
        if status == 403:
            raise DistillError(f"{plan.repo_id} belongs to someone else, or your token cannot write to it (403); "
                               f"{_FIX_OWNER}") from None
        raise DistillError(f"the hub at {where} answered {status} for {plan.repo_id}: "
                           f"{str(error).splitlines()[0]}") from None
    except ValueError as error:
        if not str(error).startswith("Invalid metadata in README.md"):
            raise
        raise DistillError(f"the hub refused {plan.folder / 'README.md'}: "
                           f"{' '.join(str(error).split())}; fix its front matter and push again") from None
    except unreachable as error:  # no network, DNS, refused connection, timeout
        raise DistillError(f"cannot reach the hub at {where} ({type(error).__name__}); check the network "
                           "and push again") from None
    return str(commit.commit_url)

