"""Code that exists for tests, the demo and the screenshots, under a name that says so.

``tiny_t5`` / ``tiny_llm`` write tiny random checkpoints in the real on-disk formats (no hub here);
``synthetic_task`` a small task a tiny T5 can learn; ``t5_reference`` the same checkpoints in
transformers' PyTorch T5 for parity checks; ``ui_fakes`` scripted runs for the terminal UI;
``mac_tools`` recording fakes of macOS's caffeinate, pmset and osascript;
``distributed_check`` one stage on every rank of an ``mlx.launch`` group; and ``gguf_models`` small
GGUF files in llama.cpp's layouts, and a conversion's peak memory measured in a process of its own.
"""
