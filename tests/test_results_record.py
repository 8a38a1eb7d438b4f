"""results/ stays a record: an index of every experiment folder, small tables instead of raw run output, and scripts
that run from any clone. Reads the files git tracks (a fresh clone's view); skipped outside a git checkout."""

import fnmatch
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results"
MAX_BYTES = 1_000_000  # the largest table committed is a few hundred kB
MAX_FILES = 300
RAW_KINDS = ("events.out.tfevents*", "*.done.json", "stdout.log", "log.jsonl", "*.csv.gz", "*.safetensors", "*.pt",
             "*.pth", "recon_epoch*.png")
FORBIDDEN_IN_SCRIPTS = ("/work/", "pkill", "killall", "renice")


@pytest.fixture(scope="module")
def tracked() -> list[str]:
    """Paths under results/ that git tracks, relative to results/."""
    if shutil.which("git") is None or not RESULTS.is_dir():
        pytest.skip("needs git and a results/ folder")
    done = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z", "--", "results"], capture_output=True)
    if done.returncode != 0:
        pytest.skip("not a git checkout")
    paths = [p.removeprefix("results/") for p in done.stdout.decode().split("\0") if p]
    if not paths:
        pytest.skip("results/ is not tracked here")
    return paths


def index_text() -> str:
    return (RESULTS / "README.md").read_text()


def test_every_folder_has_a_readme_and_is_indexed(tracked):
    folders = sorted({p.split("/")[0] for p in tracked if "/" in p})
    assert folders, "no experiment folder under results/"
    index = index_text()
    for folder in folders:
        assert f"{folder}/README.md" in tracked, f"results/{folder}/ has no README.md"
        assert f"]({folder}/)" in index, f"results/{folder}/ is not listed in results/README.md"


def test_every_indexed_folder_exists_with_a_readme(tracked):
    listed = set(re.findall(r"^\| \[([\w.-]+)\]\(\1/\)", index_text(), flags=re.M))
    assert listed, "results/README.md's index lists no folder"
    for folder in sorted(listed):
        assert f"{folder}/README.md" in tracked, f"results/README.md lists {folder}/, which has no README.md"


def test_no_raw_run_output_or_large_files(tracked):
    raw = [p for p in tracked if any(fnmatch.fnmatch(Path(p).name, kind) for kind in RAW_KINDS)]
    assert not raw, f"raw run output tracked under results/ (keep it under RUNS; see .gitignore): {raw[:10]}"
    sizes = {p: (RESULTS / p).stat().st_size for p in tracked if (RESULTS / p).is_file()}
    large = {p: size for p, size in sizes.items() if size > MAX_BYTES}
    assert not large, f"files over {MAX_BYTES} bytes under results/: {large}"
    assert len(tracked) < MAX_FILES, f"{len(tracked)} tracked files under results/ (the index argues for < {MAX_FILES})"


def test_scripts_name_no_machine_paths_and_kill_nothing(tracked):
    scripts = [p for p in tracked if p.endswith((".sh", ".py")) and (RESULTS / p).is_file()]
    assert scripts
    for path in scripts:
        text = (RESULTS / path).read_text()
        found = [word for word in FORBIDDEN_IN_SCRIPTS if word in text]
        assert not found, f"results/{path} contains {found}: take paths from arguments or the environment"
