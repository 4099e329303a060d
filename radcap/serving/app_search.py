"""The search box of `radcap app`: a text in, the run's dataset images most like it out.

The page searches with a retrieval run (`radcap retrieval`): the one named
by `radcap app --retrieval NAME`, else the first finished one beside the
captioner run made from the same features (`radcap.models.runs.finished_runs`).
Without one, the search tab says how to make one. What it does lives here,
without Streamlit, so that it is tested like the rest of the app.
"""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path

from radcap.models import runs
from radcap.retrieval.retriever import QueryError, Retriever

RETRIEVAL_ENV = "RADCAP_APP_RETRIEVAL"
K = 6  # images a search shows


def find_retrieval(run_dir: str | Path, given: str | Path | None = None) -> Path | None:
    """The retrieval run the page searches with: `given`, else the first
    finished one beside `run_dir` (same features), else None."""
    if given:
        return runs.check(given)
    found = runs.finished_runs(run_dir, retrieval=True)
    return found[0] if found else None


def absent_message(run_dir: str | Path) -> str:
    """What the search tab says when there is no retrieval run."""
    preset = runs.load_config(run_dir).dataset
    return (
        f"No retrieval run beside {Path(run_dir).name}: make one with `radcap "
        f"retrieval --preset {preset}` (or start the page with `radcap app --run "
        f"{Path(run_dir).name} --retrieval NAME`), then reload this page."
    )


@dataclasses.dataclass
class SearchBox:
    """A retrieval run loaded once per server process, searched by the page.

    Attributes:
        run_dir: The retrieval run folder.
        retriever: Its `Retriever`.
        lock: Held while it embeds a query, one session at a time.
    """

    run_dir: Path
    retriever: Retriever
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)

    @classmethod
    def load(cls, run_dir: str | Path) -> SearchBox:
        return cls(Path(run_dir), Retriever.load(run_dir))

    def search(self, text: str, k: int = K) -> tuple[list[dict], str | None]:
        """`(hits, note)`: the `k` images most like `text`, best first (each
        `{"image_id", "path", "score", "caption", "split"}`), and a line on
        the words left out, or why nothing could be searched (then no hits)."""
        if not text.strip():
            return [], None
        try:
            with self.lock:
                table = self.retriever.search_text(text, k=k)
        except QueryError as err:
            return [], str(err)
        unknown = table.attrs["unknown_words"]
        note = f"Not in the vocabulary, left out: {' '.join(unknown)}"
        return table.to_dict("records"), note if unknown else None
