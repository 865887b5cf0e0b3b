"""Data loading: local files, GLUE layouts, the embedded VADER movie snippets, subsampling and tokenisation.

Everything is built in tmp_path in milliseconds; only the real embedded-data tests touch the pruneformer cache
($PRUNEFORMER_CACHE), and the one that may need ``pip download`` is marked slow.
"""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import pruneformer.data.embedded as embedded_mod
import pruneformer.data.sources as sources_mod
from pruneformer.data import (
    CLASSIFICATION,
    REGRESSION,
    DataBundle,
    TaskSpec,
    default_cache_dir,
    load_data,
    load_embedded_sentiment,
    load_glue,
    load_local,
    tokenize_bundle,
)
from pruneformer.errors import DataError


def write_csv(path: Path, rows: list[dict], sep: str = ",") -> Path:
    pd.DataFrame(rows).to_csv(path, sep=sep, index=False)
    return path


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def all_rows(b: DataBundle, column: str) -> list:
    """A column over train + dev (+ test) as one list (``Dataset[column]`` is a lazy Column in datasets 5)."""
    return [v for ds in (b.train, b.dev, b.test) if ds is not None for v in ds[column]]


def assert_one_line(err: pytest.ExceptionInfo) -> str:
    msg = str(err.value)
    assert "\n" not in msg and " Fix: " in msg, msg
    return msg


# --------------------------------------------------------------------------------------------------------------
# Local files
# --------------------------------------------------------------------------------------------------------------


def test_csv_string_labels_sorted_map_and_dev_file(tmp_path):
    train = write_csv(tmp_path / "reviews.csv", [
        {"review": "great film", "sentiment": "pos"},
        {"review": "NA", "sentiment": "neg"},  # literal text "NA" must stay text
        {"review": "meh, fine", "sentiment": "neutral"},
        {"review": "awful", "sentiment": "neg"},
    ])
    dev = write_csv(tmp_path / "dev.csv", [{"review": "so good", "sentiment": "pos"},
                                           {"review": "bad", "sentiment": "neg"}])
    b = load_local(train, dev, text_column="review", label_column="sentiment")
    assert b.task == TaskSpec(name="reviews", text_column="text", text_pair_column=None, label_column="label",
                              problem_type=CLASSIFICATION, num_labels=3, label_names=["neg", "neutral", "pos"],
                              metrics=["accuracy"])
    assert b.train.column_names == ["text", "label"]
    assert b.train["text"] == ["great film", "NA", "meh, fine", "awful"]
    assert b.train["label"] == [2, 0, 1, 0]
    assert b.dev["label"] == [2, 0]
    assert b.train.features["label"].dtype == "int64"
    assert b.test is None


def test_tsv_int_labels_with_text_pairs_and_test_file(tmp_path):
    rows = [{"premise": f"p{i}", "hypothesis": f"h {i}", "y": i % 3} for i in range(6)]
    train = write_csv(tmp_path / "nli.tsv", rows, sep="\t")
    dev = write_csv(tmp_path / "nli_dev.tsv", rows[:2], sep="\t")
    test = write_csv(tmp_path / "nli_test.tsv", rows[2:5], sep="\t")
    b = load_local(train, dev, test, text_column="premise", text_pair_column="hypothesis", label_column="y")
    assert b.task.text_pair_column == "text_pair"
    assert b.task.num_labels == 3 and b.task.label_names is None and b.task.metrics == ["accuracy"]
    assert b.train.column_names == ["text", "text_pair", "label"]
    assert b.train["text_pair"][:2] == ["h 0", "h 1"] and b.train["label"] == [0, 1, 2, 0, 1, 2]
    assert len(b.test) == 3 and b.test["label"] == [2, 0, 1]


def test_int_labels_num_labels_is_max_plus_one(tmp_path):
    train = write_jsonl(tmp_path / "t.jsonl", [{"text": "a", "label": 0}, {"text": "b", "label": 3},
                                               {"text": "c", "label": 3}])
    b = load_local(train, write_jsonl(tmp_path / "d.jsonl", [{"text": "d", "label": 2}]))
    assert b.task.num_labels == 4 and b.dev["label"] == [2]


def test_jsonl_float_labels_are_regression_with_seeded_dev_split(tmp_path):
    rows = [{"text": f"sentence {i}", "label": i / 4} for i in range(40)]
    train = write_jsonl(tmp_path / "scores.jsonl", rows)
    b = load_local(train, dev_fraction=0.25, seed=3)
    assert b.task.problem_type == REGRESSION and b.task.num_labels == 1 and b.task.label_names is None
    assert b.task.metrics == ["pearson", "spearman"]
    assert b.train.features["label"].dtype == "float32"
    assert (len(b.train), len(b.dev)) == (30, 10)
    assert set(b.train["text"]).isdisjoint(b.dev["text"])
    assert set(b.train["text"]) | set(b.dev["text"]) == {r["text"] for r in rows}
    by_text = {r["text"]: r["label"] for r in rows}
    assert all(by_text[t] == pytest.approx(v) for t, v in zip(b.dev["text"], b.dev["label"]))
    again = load_local(train, dev_fraction=0.25, seed=3)
    other = load_local(train, dev_fraction=0.25, seed=4)
    assert again.dev["text"] == b.dev["text"] and other.dev["text"] != b.dev["text"]


def test_parquet_and_json_whole_floats_are_classes_and_task_type_override(tmp_path):
    df = pd.DataFrame({"text": ["a", "b", "c", "d"], "label": [1.0, 0.0, 1.0, 0.0]})
    df.to_parquet(tmp_path / "p.parquet")
    b = load_local(tmp_path / "p.parquet", tmp_path / "p.parquet")
    assert b.task.problem_type == CLASSIFICATION and b.task.num_labels == 2
    assert b.task.metrics == ["accuracy", "f1"] and b.train["label"] == [1, 0, 1, 0]
    forced = load_local(tmp_path / "p.parquet", tmp_path / "p.parquet", task_type="regression")
    assert forced.task.problem_type == REGRESSION and forced.train["label"] == [1.0, 0.0, 1.0, 0.0]
    write_jsonl(tmp_path / "r.json", [{"text": "x", "label": 0.5}, {"text": "y", "label": 1.5}])
    with pytest.raises(DataError, match="non-integer") as err:
        load_local(tmp_path / "r.json", tmp_path / "r.json", task_type="classification")
    assert_one_line(err)


def test_local_file_errors_are_one_line(tmp_path):
    with pytest.raises(DataError, match="does not exist") as err:
        load_local(tmp_path / "missing.csv")
    assert_one_line(err)
    (tmp_path / "data.xlsx").write_text("x")
    with pytest.raises(DataError, match="unsupported extension '.xlsx'") as err:
        load_local(tmp_path / "data.xlsx")
    assert ".parquet" in assert_one_line(err)

    train = write_csv(tmp_path / "train.csv", [{"sentence": "a", "label": "x"}, {"sentence": "b", "label": "y"}])
    with pytest.raises(DataError, match="no column 'text'") as err:
        load_local(train, train)
    assert "its columns are: sentence, label" in assert_one_line(err)
    with pytest.raises(DataError, match="no column 'lbl'.*sentence, label"):
        load_local(train, train, text_column="sentence", label_column="lbl")

    dev = write_csv(tmp_path / "dev.csv", [{"sentence": "c", "label": "z"}])
    with pytest.raises(DataError, match=r"label\(s\) 'z' that do not occur") as err:
        load_local(train, dev, text_column="sentence")
    assert_one_line(err)

    int_train = write_csv(tmp_path / "i.csv", [{"text": "a", "label": 0}, {"text": "b", "label": 1}])
    int_dev = write_csv(tmp_path / "i_dev.csv", [{"text": "c", "label": 2}])
    with pytest.raises(DataError, match="outside the classes 0..1"):
        load_local(int_train, int_dev)

    (tmp_path / "empty.csv").write_text("text,label\n")
    with pytest.raises(DataError, match="no rows") as err:
        load_local(tmp_path / "empty.csv")
    assert_one_line(err)

    holes = write_csv(tmp_path / "holes.csv", [{"text": "a", "label": "x"}, {"text": "b", "label": ""},
                                               {"text": "c", "label": "y"}])
    with pytest.raises(DataError, match="empty label column"):
        load_local(holes, holes)
    single = write_csv(tmp_path / "single.csv", [{"text": "a", "label": "x"}, {"text": "b", "label": "x"}])
    with pytest.raises(DataError, match="at least two classes"):
        load_local(single, single)
    with pytest.raises(DataError, match="too few"):
        load_local(write_csv(tmp_path / "one.csv", [{"text": "a", "label": 0.5}]))


# --------------------------------------------------------------------------------------------------------------
# GLUE
# --------------------------------------------------------------------------------------------------------------


def write_tsv_lines(path: Path, lines: list[str], bom: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(("\ufeff" if bom else "") + "\n".join(lines) + "\n", encoding="utf-8")


@pytest.fixture
def glue_dir(tmp_path) -> Path:
    """A tiny GLUE tree in the real file layouts (headerless CoLA, BOM-headed MRPC, stray quotes, ...)."""
    root = tmp_path / "glue_data"
    cola = ["gj04\t1\t\tOur friends won't buy this analysis, let alone the next one we propose.",
            "gj04\t0\t*\tThey drank the pub \"dry.",
            "gj04\t1\t\tNA"]
    write_tsv_lines(root / "CoLA" / "train.tsv", cola)
    write_tsv_lines(root / "CoLA" / "dev.tsv", cola[:2])
    mrpc = ["Quality\t#1 ID\t#2 ID\t#1 String\t#2 String",
            "1\t702876\t702977\tAmrozi accused his brother .\tReferring to him as \"the witness .",
            "0\t2108705\t2108831\tYucaipa owned Dominick 's .\tYucaipa bought Dominick 's in 1995 ."]
    write_tsv_lines(root / "MRPC" / "train.tsv", mrpc, bom=True)
    write_tsv_lines(root / "MRPC" / "dev.tsv", mrpc)
    stsb = ["index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore",
            "0\tmain-captions\tMSRvid\t2012test\t0001\tnone\tnone\tA plane is taking off.\tAn air plane is taking off.\t5.000",
            "1\tmain-captions\tMSRvid\t2012test\t0004\tnone\tnone\tA man is playing a flute.\tA man plays a flute.\t3.800",
            "2\tmain-captions\tMSRvid\t2012test\t0005\tnone\tnone\tA man slices \"cheese.\tA dog runs.\t0.250"]
    write_tsv_lines(root / "STS-B" / "train.tsv", stsb)
    write_tsv_lines(root / "STS-B" / "dev.tsv", stsb[:3])
    mnli_header = ("index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\t"
                   "sentence1_parse\tsentence2_parse\tsentence1\tsentence2\tlabel1\tgold_label")
    mnli = [mnli_header,
            "0\t31193\t31193n\tgovernment\t( x )\t( y )\t(ROOT x)\t(ROOT y)\tConceptually cream skimming.\t"
            "Product and geography.\tneutral\tneutral",
            "1\t101457\t101457e\ttelephone\t( x )\t( y )\t(ROOT x)\t(ROOT y)\tyou know \"during the season\t"
            "You lose the things.\tentailment\tentailment",
            "2\t134793\t134793c\tfiction\t( x )\t( y )\t(ROOT x)\t(ROOT y)\tOne of our number.\t"
            "We have no one free.\tcontradiction\tcontradiction"]
    write_tsv_lines(root / "MNLI" / "train.tsv", mnli)
    write_tsv_lines(root / "MNLI" / "dev_matched.tsv", mnli[:1] + mnli[2:])
    write_tsv_lines(root / "sst2" / "train.tsv", ["sentence\tlabel", "hide new secretions \t0", "a gem \t1"])
    write_tsv_lines(root / "sst2" / "dev.tsv", ["sentence\tlabel", "it 's a charming journey . \t1"])
    return root


def test_glue_cola_headerless(glue_dir):
    b = load_glue(glue_dir, "cola")
    assert b.task.name == "cola" and b.task.metrics == ["mcc"] and b.test is None
    assert b.task.label_names == ["unacceptable", "acceptable"] and b.task.num_labels == 2
    assert b.train["label"] == [1, 0, 1]
    assert b.train["text"][1] == 'They drank the pub "dry.'  # quoting disabled: the stray quote is kept
    assert b.train["text"][2] == "NA"
    assert len(b.dev) == 2 and b.train.column_names == ["text", "label"]


def test_glue_mrpc_pairs_bom_header(glue_dir):
    b = load_data(f"glue:MRPC:{glue_dir}")
    assert b.task.name == "mrpc" and b.task.metrics == ["f1", "accuracy"]
    assert b.task.text_pair_column == "text_pair"
    assert b.train["text"] == ["Amrozi accused his brother .", "Yucaipa owned Dominick 's ."]
    assert b.train["text_pair"][0] == 'Referring to him as "the witness .'
    assert b.train["label"] == [1, 0]


def test_glue_stsb_regression_and_spellings(glue_dir):
    for name in ("stsb", "STS-B", "sts-b", "StsB"):
        b = load_glue(glue_dir, name)
        assert b.task.name == "stsb"
    assert b.task.problem_type == REGRESSION and b.task.num_labels == 1 and b.task.label_names is None
    assert b.task.metrics == ["pearson", "spearman"]
    assert b.train["label"] == pytest.approx([5.0, 3.8, 0.25])
    assert b.train["text"][2] == 'A man slices "cheese.' and b.train["text_pair"][2] == "A dog runs."
    assert b.train.features["label"].dtype == "float32" and len(b.dev) == 2


def test_glue_mnli_dev_matched_and_sst2(glue_dir):
    b = load_data("mnli", glue_dir=glue_dir)
    assert b.task.label_names == ["contradiction", "entailment", "neutral"] and b.task.num_labels == 3
    assert b.task.metrics == ["accuracy"]
    assert b.train["label"] == [2, 1, 0] and b.dev["label"] == [1, 0]
    assert b.train["text"][1] == 'you know "during the season'
    sst = load_data(str(glue_dir), glue_task="SST-2", seed=5, text_column="text")  # generic callers' defaults
    assert sst.task.name == "sst2" and sst.train["label"] == [0, 1] and len(sst.dev) == 1


def test_glue_errors(glue_dir, tmp_path):
    with pytest.raises(DataError, match="unknown GLUE task 'sst5'") as err:
        load_glue(glue_dir, "sst5")
    msg = assert_one_line(err)
    assert "cola, sst2, mrpc, qqp, stsb, mnli, qnli, rte, wnli" in msg
    with pytest.raises(DataError, match="no folder for GLUE task 'rte'.*CoLA, MNLI, MRPC, STS-B, sst2"):
        load_glue(glue_dir, "RTE")
    with pytest.raises(DataError, match="does not exist"):
        load_glue(tmp_path / "nope", "cola")
    write_tsv_lines(glue_dir / "QNLI" / "train.tsv", ["index\tquestion\tsentence\tlabel", "0\tq?\ts.\tmaybe"])
    write_tsv_lines(glue_dir / "QNLI" / "dev.tsv", ["index\tquestion\tsentence\tlabel", "0\tq?\ts.\tentailment"])
    with pytest.raises(DataError, match="'maybe', expected entailment, not_entailment"):
        load_glue(glue_dir, "qnli")
    write_tsv_lines(glue_dir / "RTE" / "train.tsv", ["index\tpremise\thypothesis\tlabel", "0\ta\tb\tentailment"])
    write_tsv_lines(glue_dir / "RTE" / "dev.tsv", ["index\tpremise\thypothesis\tlabel", "0\ta\tb\tentailment"])
    with pytest.raises(DataError, match="no column 'sentence1'.*index, premise, hypothesis, label"):
        load_glue(glue_dir, "rte")
    with pytest.raises(DataError, match="does not apply to GLUE"):
        load_data(f"glue:cola:{glue_dir}", text_column="review")


# --------------------------------------------------------------------------------------------------------------
# Dispatcher, subsampling, task spec, tokenisation
# --------------------------------------------------------------------------------------------------------------


def test_load_data_dispatch(tmp_path, monkeypatch):
    train = write_csv(tmp_path / "tr.csv", [{"text": f"t{i}", "label": i % 2} for i in range(10)])
    b = load_data(str(train), dev=None, text_column="text", seed=1)
    assert b.task.name == "tr" and (len(b.train), len(b.dev)) == (9, 1)
    calls = []
    monkeypatch.setattr(sources_mod, "load_embedded_sentiment", lambda **kw: calls.append(kw) or "bundle")
    assert load_data("embedded", seed=4, dev=None, label_column="label") == "bundle"
    assert load_data("movie-sentiment") == "bundle"
    assert calls == [{"seed": 4}, {}]
    with pytest.raises(DataError, match="not an existing file") as err:
        load_data(str(tmp_path / "nothing.csv"))
    assert_one_line(err)
    with pytest.raises(DataError, match="looks like a GLUE task"):
        load_data("mrpc")
    with pytest.raises(DataError, match="does not say where the GLUE data is"):
        load_data("glue:cola")


def make_bundle(n_train: int = 50, n_eval: int = 20) -> DataBundle:
    import datasets

    def ds(n: int, prefix: str) -> datasets.Dataset:
        return datasets.Dataset.from_dict({"text": [f"{prefix}{i}" for i in range(n)], "label": [i % 2 for i in range(n)]})

    spec = TaskSpec("toy", "text", None, "label", CLASSIFICATION, 2, ["negative", "positive"], ["accuracy", "f1"])
    return DataBundle(spec, ds(n_train, "tr"), ds(n_eval, "dv"), ds(n_eval, "te"))


def test_subsample_is_deterministic_and_bounded():
    b = make_bundle()
    s1, s2, s3 = b.subsample(10, 5, seed=0), b.subsample(10, 5, seed=0), b.subsample(10, 5, seed=1)
    assert s1.split_sizes() == {"train": 10, "dev": 5, "test": 5}
    assert s1.train["text"] == s2.train["text"] and s1.dev["text"] == s2.dev["text"]
    assert s1.train["text"] != s3.train["text"]
    assert set(s1.train["text"]) <= set(b.train["text"])
    whole = b.subsample(None, 1000, seed=0)
    assert whole.split_sizes() == b.split_sizes()
    with pytest.raises(DataError, match="max_train=0"):
        b.subsample(0, None, seed=0)


def test_task_spec_round_trip():
    spec = make_bundle().task
    d = spec.to_dict()
    assert d["metrics"] == ["accuracy", "f1"] and d["label_names"] == ["negative", "positive"]
    assert json.loads(json.dumps(d)) == d
    assert TaskSpec.from_dict(d) == spec and spec.primary_metric == "accuracy" and not spec.is_regression


@pytest.fixture
def tiny_tokenizer(tmp_path):
    from transformers import BertTokenizerFast

    words = ["the", "good", "bad", "movie", "film", "was", "very", "a", "plot", "great", "awful", "acting"]
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words) + "\n")
    tok = BertTokenizerFast(vocab=str(vocab), vocab_file=str(vocab), do_lower_case=True)
    assert tok.convert_tokens_to_ids("good") == 6  # the vocab file was really used
    return tok


def test_tokenize_single_and_pairs(tiny_tokenizer, tmp_path):
    train = write_csv(tmp_path / "s.csv", [
        {"text": "the good movie", "label": "pos"},
        {"text": "a very very very bad plot and the acting was awful", "label": "neg"},
    ])
    b = load_local(train, train)
    t = tokenize_bundle(b, tiny_tokenizer, max_length=8)
    assert t.task == b.task and t.test is None
    assert set(t.train.column_names) == {"input_ids", "attention_mask", "token_type_ids", "labels"}
    assert t.train["input_ids"][0] == [2, 5, 6, 8, 3]  # [CLS] the good movie [SEP], not padded
    assert len(t.train["input_ids"][1]) == 8 and t.train["input_ids"][1][-1] == 3  # truncated, still ends in [SEP]
    assert t.train["attention_mask"][0] == [1] * 5
    assert t.train["labels"] == [1, 0] and t.train.features["labels"].dtype == "int64"

    pairs = write_jsonl(tmp_path / "p.jsonl", [{"a": "good film", "b": "great movie", "y": 0.5},
                                               {"a": "bad", "b": "awful plot", "y": 4.25}])
    pb = load_local(pairs, pairs, text_column="a", text_pair_column="b", label_column="y")
    tp = tokenize_bundle(pb, tiny_tokenizer, max_length=32)
    assert tp.train["input_ids"][0] == [2, 6, 9, 3, 14, 8, 3]
    assert tp.train["token_type_ids"][0] == [0, 0, 0, 0, 1, 1, 1]
    assert tp.train.features["labels"].dtype == "float32" and tp.train["labels"] == [0.5, 4.25]


def test_tokenize_drops_extra_columns_and_keeps_test(tiny_tokenizer):
    import datasets

    b = make_bundle(4, 3)
    b.train = b.train.add_column("score", [0.1, 0.2, 0.3, 0.4])
    t = tokenize_bundle(b, tiny_tokenizer, max_length=16)
    assert "score" not in t.train.column_names and len(t.test) == 3
    with pytest.raises(DataError, match="max_length"):
        tokenize_bundle(b, tiny_tokenizer, max_length=1)
    b.dev = datasets.Dataset.from_dict({"sentence": ["x"], "label": [0]})
    with pytest.raises(DataError, match="lacks column"):
        tokenize_bundle(b, tiny_tokenizer, max_length=16)


# --------------------------------------------------------------------------------------------------------------
# Embedded data: the fetch / verify / cache machinery on a fake sdist (offline, fast)
# --------------------------------------------------------------------------------------------------------------


def _tar_gz(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, payload in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return buf.getvalue()


@pytest.fixture
def fake_vader(tmp_path, monkeypatch):
    """A fake vaderSentiment sdist (2,105 snippets, 5 with score 0) whose hashes the module is told to expect."""
    rng = np.random.default_rng(0)
    scores = np.round(rng.uniform(-3, 3, 2105), 4)
    scores[[3, 50, 700, 1500, 2104]] = 0
    lines = [f"{i + 1}\t{'0' if s == 0 else repr(float(s))}\tsnippet {i} text" for i, s in enumerate(scores)]
    snippets = "\r\n".join(lines).encode()  # CRLF, no final newline, like the real file
    archive = _tar_gz({"hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt": snippets,
                       "hutto_ICWSM_2014/tweets_GroundTruth.txt": b"1\t0.5\thi"})
    sdist = tmp_path / "vaderSentiment-3.3.2.tar.gz"
    sdist.write_bytes(_tar_gz({"vaderSentiment-3.3.2/setup.py": b"",
                               "vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz": archive}))
    monkeypatch.setattr(embedded_mod, "VADER_ARCHIVE_SHA256", hashlib.sha256(archive).hexdigest())
    monkeypatch.setattr(embedded_mod, "VADER_SNIPPETS_SHA256", hashlib.sha256(snippets).hexdigest())
    monkeypatch.delenv("PRUNEFORMER_VADER_SDIST", raising=False)
    return {"sdist": sdist, "scores": scores, "cache": tmp_path / "cache"}


def forbid_pip(monkeypatch):
    def no_pip(*args, **kwargs):
        raise AssertionError("pip must not run when the data is cached or given by PRUNEFORMER_VADER_SDIST")

    monkeypatch.setattr(embedded_mod.subprocess, "run", no_pip)


def test_embedded_from_env_sdist_then_cache(fake_vader, monkeypatch):
    forbid_pip(monkeypatch)
    monkeypatch.setenv("PRUNEFORMER_VADER_SDIST", str(fake_vader["sdist"]))
    b = load_embedded_sentiment(cache_dir=fake_vader["cache"], seed=0)
    assert b.split_sizes() == {"train": 100, "dev": 1000, "test": 1000}
    assert b.task.name == "movie-sentiment" and b.task.metrics == ["accuracy", "f1"]
    assert b.task.label_names == ["negative", "positive"] and b.train.column_names == ["text", "label", "score"]
    rows = dict(zip(all_rows(b, "text"), all_rows(b, "score")))
    assert len(rows) == 2100 and all(s != 0 for s in rows.values())
    assert all(lab == int(s > 0) for lab, s in zip(b.dev["label"], b.dev["score"]))
    assert rows["snippet 1 text"] == pytest.approx(fake_vader["scores"][1])
    assert (fake_vader["cache"] / "vader" / "movieReviewSnippets_GroundTruth.txt").is_file()

    monkeypatch.delenv("PRUNEFORMER_VADER_SDIST")
    cached = load_embedded_sentiment(cache_dir=fake_vader["cache"], seed=0)  # no env, no pip: the cache
    assert cached.dev["text"] == b.dev["text"] and cached.train["text"] == b.train["text"]
    assert load_embedded_sentiment(cache_dir=fake_vader["cache"], seed=1).dev["text"] != b.dev["text"]

    monkeypatch.setenv("PRUNEFORMER_CACHE", str(fake_vader["cache"]))
    assert default_cache_dir() == fake_vader["cache"]
    assert load_data("embedded").dev["text"] == b.dev["text"]

    archive = fake_vader["cache"] / "vader" / "hutto_ICWSM_2014.tar.gz"
    archive.write_bytes(archive.read_bytes()[:-10] + b"corrupted!")
    with pytest.raises(DataError, match="cached archive .* is corrupt") as err:
        load_embedded_sentiment(cache_dir=fake_vader["cache"])
    assert_one_line(err)


def test_embedded_uses_pip_and_reports_failure(fake_vader, monkeypatch):
    seen = []

    def fake_pip(cmd, **kwargs):
        seen.append(cmd)
        dest = Path(cmd[cmd.index("-d") + 1])
        (dest / fake_vader["sdist"].name).write_bytes(fake_vader["sdist"].read_bytes())
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(embedded_mod.subprocess, "run", fake_pip)
    assert len(load_embedded_sentiment(cache_dir=fake_vader["cache"]).train) == 100
    assert seen and seen[0][1:] == ["-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                                    "vaderSentiment==3.3.2", "-d", seen[0][-1]]
    load_embedded_sentiment(cache_dir=fake_vader["cache"])
    assert len(seen) == 1  # second call served from the cache

    def failing_pip(cmd, **kwargs):
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: Could not find a version\nERROR: No matching distribution")

    monkeypatch.setattr(embedded_mod.subprocess, "run", failing_pip)
    with pytest.raises(DataError, match="pip could not download.*No matching distribution") as err:
        load_embedded_sentiment(cache_dir=fake_vader["cache"] / "elsewhere")
    assert "PRUNEFORMER_VADER_SDIST=" in assert_one_line(err)


def test_embedded_rejects_wrong_sdist(fake_vader, monkeypatch, tmp_path):
    forbid_pip(monkeypatch)
    monkeypatch.setattr(embedded_mod, "VADER_ARCHIVE_SHA256", "0" * 64)
    monkeypatch.setenv("PRUNEFORMER_VADER_SDIST", str(fake_vader["sdist"]))
    with pytest.raises(DataError, match="expected 000000000000") as err:
        load_embedded_sentiment(cache_dir=fake_vader["cache"])
    assert_one_line(err)
    assert not (fake_vader["cache"] / "vader" / "hutto_ICWSM_2014.tar.gz").exists()  # nothing bad is cached
    monkeypatch.setenv("PRUNEFORMER_VADER_SDIST", str(tmp_path / "missing.tar.gz"))
    with pytest.raises(DataError, match="not a file"):
        load_embedded_sentiment(cache_dir=fake_vader["cache"])
    not_tar = tmp_path / "vaderSentiment-3.3.2.zip"
    not_tar.write_bytes(b"PK not a tarball")
    monkeypatch.setenv("PRUNEFORMER_VADER_SDIST", str(not_tar))
    with pytest.raises(DataError, match="not a readable .tar.gz"):
        load_embedded_sentiment(cache_dir=fake_vader["cache"])


# --------------------------------------------------------------------------------------------------------------
# Embedded data: the real file (cache dir from $PRUNEFORMER_CACHE)
# --------------------------------------------------------------------------------------------------------------

REAL_LABELLED = 10_568  # 10,605 snippets minus 37 with a mean score of exactly 0


def _check_real_bundle(b: DataBundle) -> None:
    assert b.split_sizes() == {"train": REAL_LABELLED - 2000, "dev": 1000, "test": 1000}
    texts = all_rows(b, "text")
    scores = np.array(all_rows(b, "score"))
    labels = np.array(all_rows(b, "label"))
    assert len(texts) == REAL_LABELLED and not np.any(scores == 0)
    assert np.array_equal(labels, (scores > 0).astype(int))
    assert int(labels.sum()) == 5242  # 5,242 positive, 5,326 negative
    assert any(t.startswith("The Rock is destined to be the 21st Century's new ''Conan''") for t in texts)


@pytest.fixture(scope="module")
def real_cache() -> Path:
    """The real VADER archive in the default cache: fetched with pip (PyPI) when the cache is empty, as a
    user's first run does, so the tests that read it run on a fresh machine too."""
    _check_real_bundle(load_embedded_sentiment())
    return default_cache_dir() / "vader"


@pytest.mark.slow
def test_embedded_real_cached(real_cache, monkeypatch, tmp_path):
    """Once cached, the real data loads without pip, the same for a seed, reshuffled for another."""
    forbid_pip(monkeypatch)
    b0 = load_embedded_sentiment(seed=0)
    _check_real_bundle(b0)
    assert load_embedded_sentiment(seed=0).dev["text"] == b0.dev["text"]
    b1 = load_embedded_sentiment(seed=1)
    assert b1.dev["text"] != b0.dev["text"] and sorted(all_rows(b1, "text")) == sorted(all_rows(b0, "text"))
    assert embedded_mod.VADER_ARCHIVE_SHA256 == "d5bb07d87474b3eb8d30b4deccbc23f19d742a6c5718fbacc65485b70b95c5fa"

    # A corrupted copy of the real cached archive is refused.
    real = real_cache
    copy = tmp_path / "cache" / "vader"
    copy.mkdir(parents=True)
    for f in real.iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    archive = copy / "hutto_ICWSM_2014.tar.gz"
    raw = bytearray(archive.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    archive.write_bytes(bytes(raw))
    with pytest.raises(DataError, match="is corrupt.*expected d5bb07d87474") as err:
        load_embedded_sentiment(cache_dir=tmp_path / "cache")
    assert_one_line(err)


def test_empty_and_malformed_files(tmp_path):
    (tmp_path / "zero.jsonl").write_text("")
    with pytest.raises(DataError, match="has no rows"):
        load_local(tmp_path / "zero.jsonl")
    (tmp_path / "broken.jsonl").write_text('{"text": "a", "label": 1}\n{"text": \n')
    with pytest.raises(DataError, match="could not read train file .*broken.jsonl as jsonl") as err:
        load_local(tmp_path / "broken.jsonl")
    assert_one_line(err)
