"""The model catalog: every entry well-formed, names resolve, fit checks follow the memory given."""

import subprocess
import sys

from mlx_distill.catalog import fits_in_memory, is_downloaded, load_catalog, resolve_model, GB


def test_catalog_entries_and_defaults():
    catalog = load_catalog()
    assert len(catalog.teachers) >= 8 and len(catalog.students) >= 6
    names = [m.name for m in (*catalog.teachers, *catalog.students)]
    assert len(names) == len(set(names))
    assert catalog.find(catalog.default_teacher).kind == "teacher"
    assert catalog.find(catalog.default_student).kind == "student"
    for teacher in catalog.teachers:
        assert "/" in teacher.id and teacher.bits in (4, 16)
        if teacher.size_is_published:
            assert teacher.size_source
        elif teacher.bits == 4:
            # 4-bit weights with scales and biases: 4.5 bits a parameter.
            assert abs(teacher.download_bytes - teacher.params_billion * GB * 4.5 / 8) < 1e6


def test_resolve_and_fit():
    catalog = load_catalog()
    seven_b = catalog.find("qwen2.5-7b")
    assert resolve_model("qwen2.5-7b") == seven_b.id
    assert resolve_model("some-org/unknown-model") == "some-org/unknown-model"
    assert fits_in_memory(seven_b, memory_bytes=10**15)
    assert not fits_in_memory(seven_b, memory_bytes=10**9)


def test_local_folder_counts_as_downloaded(tmp_path):
    assert is_downloaded(str(tmp_path))
    assert not is_downloaded("nobody/not-a-cached-model-xyz")


def test_models_command_lists_both_kinds():
    out = subprocess.run([sys.executable, "-m", "mlx_distill", "models"], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert "qwen2.5-7b" in out.stdout and "flan-t5-base" in out.stdout
