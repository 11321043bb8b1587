"""A local MLflow registry that mirrors the original team's chatbot: versions 1..7 of one model, each from a run.

Every version is logged with real MLflow calls (run, parameters, metrics, pyfunc model with signature, artifacts,
registration, descriptions, tags, aliases) into a SQLite store plus an artifact folder. The model is a small
extractive retrieval chatbot standing in for the team's RAG chain: it retrieves chunks of a bundled corpus by
keyword overlap and answers with their best sentences, so its offline metrics are computed, not written down.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import sqlite3
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cloudpickle
import mlflow
import pandas as pd
from filelock import FileLock
from mlflow import MlflowClient
from mlflow.models import ModelSignature
from mlflow.types import DataType
from mlflow.types.schema import Array, ColSpec, Object, ParamSchema, ParamSpec, Property, Schema

from data_access.errors import DataAccessError
from data_access.registry import RegistryConfig, explain_failure

DEMO_MODEL_NAME = "dbdemos_advanced_chatbot_model"
DEMO_RUN_NAME = "dbdemos_chatbot_rag"
DEMO_EXPERIMENT_NAME = "dbdemos_advanced_chatbot"
SERVING_ALIAS = "champion"
PREVIOUS_ALIAS = "previous"

_logger = logging.getLogger(__name__)
_BUILD_LOCK = threading.Lock()  # the fluent MLflow API used for logging works on process-wide URIs

# The stand-in knowledge base: short documentation snippets the chatbot retrieves from.
CORPUS: dict[str, str] = {
    "model-serving": (
        "Databricks Model Serving exposes MLflow models as REST endpoints. An endpoint has one or more served "
        "entities, each naming a registered model and a version. Changing the served version starts a config "
        "update; the endpoint keeps serving the old version until the new one is ready. Scale to zero stops "
        "compute when no requests arrive, at the cost of a cold start."
    ),
    "inference-tables": (
        "Inference tables log every request and response of a serving endpoint to a Delta table in Unity "
        "Catalog. Each row holds the request and response JSON, the status code, the execution time in "
        "milliseconds and request metadata with the model name and version. Use them to monitor quality, "
        "latency and errors over time."
    ),
    "model-registry": (
        "The MLflow model registry stores versions of a model. Each version links to the run that produced "
        "it, its MLmodel file, its signature and its artifacts. Aliases such as champion point to one version; "
        "moving an alias is how a deployment picks another version without changing code."
    ),
    "rollback": (
        "To roll back a serving endpoint, open Serving, select the endpoint, choose Edit endpoint, pick an "
        "earlier version under Served entities and press Update. Keep workload size and scale to zero as they "
        "were. The previous version serves again once the update finishes."
    ),
    "vector-search": (
        "Databricks Vector Search keeps an index of embeddings synced with a Delta table. A retriever asks the "
        "index for the k chunks closest to the question. Larger chunks carry more context per hit; more hits "
        "raise recall but lengthen the prompt."
    ),
    "rag-evaluation": (
        "Evaluate a retrieval augmented chatbot offline before promoting it. Answer relevance measures how much "
        "of the expected answer the response covers. Faithfulness measures how much of the response is "
        "supported by the retrieved context. Track latency too, since longer prompts answer slower."
    ),
    "unity-catalog": (
        "Unity Catalog governs tables, volumes and models with three level names: catalog, schema and object. "
        "Models registered in Unity Catalog use aliases instead of stages. Grant EXECUTE to let a principal "
        "load a model and MANAGE to let it change aliases."
    ),
}

# Offline evaluation set: question, expected answer, and the document that holds it.
EVAL_SET: tuple[tuple[str, str, str], ...] = (
    (
        "How do I roll back a serving endpoint to an earlier version?",
        "open Serving, select the endpoint, choose Edit endpoint, pick an earlier version under Served entities "
        "and press Update",
        "rollback",
    ),
    (
        "What does an inference table record?",
        "every request and response of a serving endpoint, the status code, the execution time and request "
        "metadata with the model name and version",
        "inference-tables",
    ),
    (
        "What is a model alias in the registry?",
        "an alias such as champion points to one version; moving it lets a deployment pick another version",
        "model-registry",
    ),
    (
        "What does scale to zero do on an endpoint?",
        "scale to zero stops compute when no requests arrive, at the cost of a cold start",
        "model-serving",
    ),
    (
        "How does the retriever use vector search?",
        "the retriever asks the index for the k chunks closest to the question",
        "vector-search",
    ),
    (
        "What does faithfulness measure?",
        "how much of the response is supported by the retrieved context",
        "rag-evaluation",
    ),
    (
        "Which permission lets a principal change model aliases in Unity Catalog?",
        "grant MANAGE to let it change aliases",
        "unity-catalog",
    ),
    (
        "Does the endpoint keep serving while the version changes?",
        "the endpoint keeps serving the old version until the new one is ready",
        "model-serving",
    ),
)

PROMPT_TEMPLATES: dict[str, str] = {
    "v1": "{answer}",
    "v2": "{answer}",
    "v3": "According to the Databricks documentation: {answer}",
    "v4": "{answer}\n\nSources: {sources}",
}


@dataclass(frozen=True)
class DemoVersion:
    """What one registered version was trained with; the history of the original team's chatbot."""

    version: int
    llm_endpoint: str
    temperature: float
    max_tokens: int
    chunk_size: int
    retriever_k: int
    prompt_template_version: str
    returns_sources: bool
    accepts_params: bool
    extra_requirements: tuple[str, ...]
    description: str


# fmt: off
# version, LLM endpoint, temperature, max tokens, chunk size, retriever k, prompt template, returns sources,
# accepts params, requirements beyond the model's own, description
DEMO_VERSIONS: tuple[DemoVersion, ...] = (
    DemoVersion(1, "databricks-llama-2-70b-chat", 0.1, 40, 200, 1, "v1", False, False,
                ("langchain==0.0.344", "databricks-vectorsearch==0.21"),
                "First RAG chain: one retrieved chunk, short answers."),
    DemoVersion(2, "databricks-llama-2-70b-chat", 0.1, 60, 300, 2, "v1", False, False,
                ("langchain==0.0.344", "databricks-vectorsearch==0.21"),
                "Two chunks per question, larger chunks."),
    DemoVersion(3, "databricks-mixtral-8x7b-instruct", 0.1, 80, 300, 3, "v2", False, False,
                ("langchain==0.1.5", "databricks-vectorsearch==0.22"),
                "Mixtral endpoint, three chunks per question."),
    DemoVersion(4, "databricks-mixtral-8x7b-instruct", 0.05, 80, 500, 3, "v3", True, False,
                ("langchain==0.1.5", "databricks-vectorsearch==0.22"),
                "Returns the sources it used next to the answer."),
    DemoVersion(5, "databricks-dbrx-instruct", 0.05, 100, 500, 4, "v3", True, False,
                ("langchain==0.1.16", "databricks-vectorsearch==0.33"),
                "DBRX endpoint, four chunks per question."),
    DemoVersion(6, "databricks-meta-llama-3-70b-instruct", 0.0, 120, 800, 4, "v4", True, False,
                ("langchain==0.2.1", "databricks-vectorsearch==0.38"),
                "Llama 3 endpoint, sources listed under the answer."),
    DemoVersion(7, "databricks-meta-llama-3-1-70b-instruct", 0.0, 120, 1000, 5, "v4", True, True,
                ("langchain==0.2.11", "langchain-community==0.2.10", "databricks-vectorsearch==0.40"),
                "Llama 3.1 endpoint, five chunks; callers may pass max_tokens per request."),
)
# fmt: on

_WORD = re.compile(r"[a-z0-9]+")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_STOP_WORDS_TEXT = (
    "a an and are as at be by do does for from how i in is it its of on or the this to what when which "
    "with while you your one"
)
_STOP_WORDS = frozenset(_STOP_WORDS_TEXT.split())


def content_words(text: str) -> list[str]:
    """Lower-case words without stop words: what retrieval and the offline metrics compare."""
    return [w for w in _WORD.findall(text.lower()) if w not in _STOP_WORDS]


def chunk_corpus(corpus: Mapping[str, str], chunk_size: int) -> list[tuple[str, str]]:
    """Split each document into chunks of whole sentences of at most `chunk_size` characters (one if longer)."""
    chunks: list[tuple[str, str]] = []
    for doc_id, text in corpus.items():
        current = ""
        for sentence in _SENTENCE_END.split(text.strip()):
            if current and len(current) + 1 + len(sentence) > chunk_size:
                chunks.append((doc_id, current))
                current = sentence
            else:
                current = f"{current} {sentence}".strip()
        if current:
            chunks.append((doc_id, current))
    return chunks


def _overlap(question_words: set[str], text: str) -> int:
    return len(question_words & set(content_words(text)))


def answer_question(
    question: str, chunks: list[tuple[str, str]], k: int, max_tokens: int, template: str
) -> tuple[str, list[str]]:
    """Retrieve the k best chunks, answer with their best sentences up to `max_tokens` words; also the sources."""
    wanted = set(content_words(question))
    ranked = sorted(range(len(chunks)), key=lambda i: (-_overlap(wanted, chunks[i][1]), i))[:k]
    retrieved = [chunks[i] for i in ranked]
    sentences = [s for _, text in retrieved for s in _SENTENCE_END.split(text)]
    sentences.sort(key=lambda s: -_overlap(wanted, s))  # stable: ties keep retrieval order
    words: list[str] = []
    for sentence in sentences:
        if words and len(words) + len(sentence.split()) > max_tokens:
            break
        words.extend(sentence.split())
    sources = list(dict.fromkeys(doc_id for doc_id, _ in retrieved))
    return template.format(answer=" ".join(words[:max_tokens]), sources=", ".join(sources)), sources


def last_user_message(messages: Any) -> str:
    """The text of the last user turn of a chat request (the question being answered)."""
    turns = list(messages) if messages is not None else []
    for turn in reversed(turns):
        if isinstance(turn, Mapping) and turn.get("role") == "user":
            return str(turn.get("content") or "")
    return ""


class DemoRagChatbot(mlflow.pyfunc.PythonModel):
    """Extractive retrieval chatbot: chat messages in, `result` (and `sources` when configured) out."""

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        config = context.model_config or {}
        self.retriever_k = int(config["retriever_k"])
        self.max_tokens = int(config["max_tokens"])
        self.returns_sources = bool(config["returns_sources"])
        self.template = Path(context.artifacts["prompt_template"]).read_text(encoding="utf-8")
        corpus = json.loads(Path(context.artifacts["corpus"]).read_text(encoding="utf-8"))
        self.chunks = chunk_corpus(corpus, int(config["chunk_size"]))

    def predict(
        self, context: mlflow.pyfunc.PythonModelContext, model_input: pd.DataFrame, params: dict | None = None
    ) -> pd.DataFrame:
        max_tokens = int((params or {}).get("max_tokens") or self.max_tokens)
        answers = [
            answer_question(last_user_message(m), self.chunks, self.retriever_k, max_tokens, self.template)
            for m in model_input["messages"]
        ]
        frame = pd.DataFrame({"result": [text for text, _ in answers]})
        if self.returns_sources:
            frame["sources"] = [sources for _, sources in answers]
        return frame


def _signature(spec: DemoVersion) -> ModelSignature:
    message = Object([Property("role", DataType.string), Property("content", DataType.string)])
    outputs = [ColSpec(DataType.string, "result")]
    if spec.returns_sources:
        outputs.append(ColSpec(Array(DataType.string), "sources"))
    params = ParamSchema([ParamSpec("max_tokens", DataType.long, spec.max_tokens)]) if spec.accepts_params else None
    return ModelSignature(inputs=Schema([ColSpec(Array(message), "messages")]), outputs=Schema(outputs), params=params)


def _requirements(spec: DemoVersion) -> list[str]:
    # The packages the demo model really imports, pinned to what is installed, then the chain's own.
    base = [f"mlflow=={mlflow.__version__}", f"cloudpickle=={cloudpickle.__version__}", f"pandas=={pd.__version__}"]
    return base + list(spec.extra_requirements)


def _params(spec: DemoVersion) -> dict[str, str | int | float]:
    return {
        "llm_endpoint": spec.llm_endpoint,
        "temperature": spec.temperature,
        "max_tokens": spec.max_tokens,
        "chunk_size": spec.chunk_size,
        "retriever_k": spec.retriever_k,
        "prompt_template_version": spec.prompt_template_version,
        "embedding_endpoint": "databricks-bge-large-en",
        "vector_search_index": "main.dbdemos_rag_chatbot.databricks_documentation_vs_index",
    }


def offline_evaluation(model: mlflow.pyfunc.PyFuncModel) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Run the evaluation set through a loaded model; metrics and one row per question."""
    rows: list[dict[str, Any]] = []
    for question, expected, doc_id in EVAL_SET:
        request = pd.DataFrame({"messages": [[{"role": "user", "content": question}]]})
        started = time.perf_counter()
        output = model.predict(request)
        latency_ms = (time.perf_counter() - started) * 1000.0
        answer = str(output["result"].iloc[0])
        sources = list(output["sources"].iloc[0]) if "sources" in output.columns else None
        expected_words = set(content_words(expected))
        answer_words = content_words(answer)
        # Faithfulness is judged against the context the model could see: the chunks of its sources, or
        # the whole corpus when the version does not report sources.
        context_words = set(content_words(" ".join(CORPUS[s] for s in (sources or CORPUS))))
        rows.append(
            {
                "question": question,
                "answer": answer,
                "sources": sources,
                "answer_relevance": len(expected_words & set(answer_words)) / len(expected_words),
                "faithfulness": sum(w in context_words for w in answer_words) / max(len(answer_words), 1),
                "retrieval_hit": None if sources is None else float(doc_id in sources),
                "answer_words": len(answer.split()),
                "latency_ms": latency_ms,
            }
        )
    frame = pd.DataFrame(rows)
    metrics = {
        "answer_relevance": float(frame["answer_relevance"].mean()),
        "faithfulness": float(frame["faithfulness"].mean()),
        "answer_words_mean": float(frame["answer_words"].mean()),
        "latency_p50_ms": float(frame["latency_ms"].quantile(0.5)),
        "latency_p95_ms": float(frame["latency_ms"].quantile(0.95)),
    }
    if frame["retrieval_hit"].notna().all():
        metrics["retrieval_hit_rate"] = float(frame["retrieval_hit"].mean())
    return metrics, rows


@contextlib.contextmanager
def _process_uris(tracking_uri: str, registry_uri: str) -> Iterator[None]:
    """Point the fluent MLflow API at the demo store for the block, then put back what was there."""
    previous_tracking = os.environ.get("MLFLOW_TRACKING_URI")
    previous_registry = os.environ.get("MLFLOW_REGISTRY_URI")
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(registry_uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous_tracking)
        mlflow.set_registry_uri(previous_registry)  # type: ignore[arg-type]
        if previous_registry is None:
            os.environ.pop("MLFLOW_REGISTRY_URI", None)


@contextlib.contextmanager
def _store_lock(store_dir: Path) -> Iterator[None]:
    # Two app processes starting together must not both build the store.
    with _BUILD_LOCK, FileLock(store_dir / ".build.lock"):
        yield


@contextlib.contextmanager
def warnings_quiet() -> Iterator[None]:
    """Silence MLflow's advice about input examples and pickling while logging the demo (it is expected).

    Also its warning that the chain's declared packages (langchain...) are not installed: the stand-in model
    does not import them.
    """
    loggers = [logging.getLogger(name) for name in ("mlflow.pyfunc", "mlflow.utils.requirements_utils")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def _log_version(client: MlflowClient, spec: DemoVersion, experiment_id: str, model_name: str, work_dir: Path) -> str:
    """Log one training run with its model and register it; returns the registered version number."""
    template_path = work_dir / f"prompt_template_{spec.prompt_template_version}.txt"
    template_path.write_text(PROMPT_TEMPLATES[spec.prompt_template_version], encoding="utf-8")
    corpus_path = work_dir / "corpus.json"
    corpus_path.write_text(json.dumps(CORPUS, indent=1), encoding="utf-8")
    config = {
        "retriever_k": spec.retriever_k,
        "max_tokens": spec.max_tokens,
        "chunk_size": spec.chunk_size,
        "returns_sources": spec.returns_sources,
    }
    with mlflow.start_run(experiment_id=experiment_id, run_name=DEMO_RUN_NAME) as run:
        mlflow.log_params(_params(spec))
        mlflow.set_tags({"demo": "inference-explorer", "llm_endpoint": spec.llm_endpoint})
        with warnings_quiet():
            info = mlflow.pyfunc.log_model(
                name="chain",
                python_model=DemoRagChatbot(),
                artifacts={"prompt_template": str(template_path), "corpus": str(corpus_path)},
                model_config=config,
                signature=_signature(spec),
                pip_requirements=_requirements(spec),  # explicit: no environment inference (slow)
                registered_model_name=model_name,
                await_registration_for=0,
            )
            metrics, rows = offline_evaluation(mlflow.pyfunc.load_model(info.model_uri))
        mlflow.log_metrics(metrics)
        mlflow.log_dict({"rows": rows}, "eval/offline_eval.json")
        mlflow.log_text(PROMPT_TEMPLATES[spec.prompt_template_version], "prompt/prompt_template.txt")
    version = str(info.registered_model_version)
    client.update_model_version(model_name, version, description=spec.description)
    client.set_model_version_tag(model_name, version, "prompt_template_version", spec.prompt_template_version)
    client.set_model_version_tag(model_name, version, "llm_endpoint", spec.llm_endpoint)
    client.set_model_version_tag(model_name, version, "validation_status", "approved")
    _logger.info("demo registry: logged version %s from run %s", version, run.info.run_id)
    return version


def _create_sqlite_file(db_path: Path) -> None:
    # WAL journal halves the time MLflow's schema migrations spend waiting on disk syncs, and lets readers
    # (the registry page) read while a rollback writes. MLflow creates every table itself.
    if not db_path.exists():
        with contextlib.closing(sqlite3.connect(db_path)) as connection:
            connection.execute("PRAGMA journal_mode=WAL")


def _existing_version_count(client: MlflowClient, model_name: str) -> int | None:
    """How many versions the model has; None when the model is not registered yet."""
    models = client.search_registered_models(filter_string=f"name = '{model_name}'")
    if not models:
        return None
    return len(client.search_model_versions(f"name = '{model_name}'", max_results=1000))


def build_demo_registry(store_dir: Path, model_name: str = DEMO_MODEL_NAME) -> RegistryConfig:
    """Create (or reuse) the local demo registry in `store_dir`; returns how to reach it.

    Idempotent: an existing complete store is reused as is, aliases included (a rollback made in the app
    survives a restart); a store left half-built by an interrupted start is completed.
    Raises DataAccessError with a reason and a way out when the store cannot be built.
    """
    if "'" in model_name:
        raise DataAccessError(f"'{model_name}' is not a usable model name.", "Use a name without quotes.")
    store_dir = Path(store_dir).resolve()
    try:
        return _build(store_dir, model_name)
    except DataAccessError:
        raise
    except Exception as error:  # shown on the page: a reason and a way out, not a stack trace
        raise DataAccessError(
            explain_failure(error, f"build the demo model registry in {store_dir}"),
            "Check that the folder is writable and has free space; delete it to start the demo registry afresh.",
        ) from error


def _build(store_dir: Path, model_name: str) -> RegistryConfig:
    store_dir.mkdir(parents=True, exist_ok=True)
    db_path = store_dir / "mlflow.db"
    uri = f"sqlite:///{db_path}"
    config = RegistryConfig(tracking_uri=uri, registry_uri=uri)
    with _store_lock(store_dir):
        _create_sqlite_file(db_path)
        client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        have = _existing_version_count(client, model_name)
        if have == len(DEMO_VERSIONS) and client.get_registered_model(model_name).aliases:
            return config
        started = time.perf_counter()
        _complete_store(client, store_dir, uri, model_name, have)
        _logger.info("demo registry built in %.1f s at %s", time.perf_counter() - started, store_dir)
    return config


def _complete_store(client: MlflowClient, store_dir: Path, uri: str, model_name: str, have: int | None) -> None:
    experiment = client.get_experiment_by_name(DEMO_EXPERIMENT_NAME)
    experiment_id = (
        experiment.experiment_id
        if experiment
        else client.create_experiment(DEMO_EXPERIMENT_NAME, artifact_location=(store_dir / "artifacts").as_uri())
    )
    if have is None:
        client.create_registered_model(
            model_name,
            tags={"use_case": "rag_chatbot", "team": "dbdemos", "demo": "inference-explorer"},
            description="RAG chatbot answering Databricks documentation questions (local demo registry).",
        )
        have = 0
    if have > len(DEMO_VERSIONS):
        raise DataAccessError(
            f"The demo store at {store_dir} holds {have} versions of {model_name}, more than the demo makes.",
            "Point the app at an empty folder or delete that folder to rebuild the demo registry.",
        )
    with _process_uris(uri, uri), tempfile.TemporaryDirectory() as work:
        for spec in DEMO_VERSIONS[have:]:
            version = _log_version(client, spec, experiment_id, model_name, Path(work))
            if version != str(spec.version):
                raise DataAccessError(
                    f"The demo store registered version {version} where version {spec.version} was expected.",
                    f"Delete {store_dir} and start the app again to rebuild the demo registry.",
                )
    aliases = client.get_registered_model(model_name).aliases
    if not aliases:
        client.set_registered_model_alias(model_name, SERVING_ALIAS, str(DEMO_VERSIONS[-1].version))
        client.set_registered_model_alias(model_name, PREVIOUS_ALIAS, str(DEMO_VERSIONS[-2].version))
