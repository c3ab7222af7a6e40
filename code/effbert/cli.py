"""`effbert <stage>`: argument parsing only; every stage is an importable function that reads and writes files."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel, ValidationError

from effbert.errors import InputError
from effbert.pipeline_config import (
    DocumentsSettings,
    EfficiencyConfig,
    ListopsSettings,
    PathfinderSettings,
    ShardRecipe,
    ShardSettings,
    SwapConfig,
)


def _documents(a: argparse.Namespace) -> None:
    from effbert.data.sources import build_documents

    build_documents(a.source, a.input, a.out, _settings_of(a, DocumentsSettings), processes=a.processes)


def _tokenizer(a: argparse.Namespace) -> None:
    from effbert.data.tokenizer import import_tokenizer, train_tokenizer

    if a.from_file:
        import_tokenizer(a.from_file, a.out, merges=a.merges)
    else:
        if not a.text:
            raise InputError("tokenizer: give --text folders to train on, or --from a tokenizer.json / vocab.txt")
        train_tokenizer(a.kind, a.vocab_size, a.text, a.out, lowercase=a.lowercase)


def _shards(a: argparse.Namespace) -> None:
    from effbert.data.shards import build_shards

    # unvalidated here: build_shards checks every value and names a bad one in one line
    recipe = ShardRecipe.model_construct(**{name: getattr(a, name) for name in ShardRecipe.model_fields})
    build_shards(a.text, a.tokenizer, a.out, max_seq_len=a.max_seq_len, recipe=recipe, sample_probs=a.sample_probs,
                 workers=a.workers)


def _pretrain(a: argparse.Namespace) -> None:
    from effbert.train.pretrain import pretrain

    pretrain(a.model, a.shards, device=a.device, threads=a.threads)


def _glue(a: argparse.Namespace) -> None:
    from effbert.train.device import set_threads
    from effbert.train.glue import finetune, finetune_grid
    from effbert.train.glue_protocol import GlueRun

    set_threads(a.threads)
    if a.grid_run is None:
        finetune_grid(a.model, a.task, a.glue_dir, device=a.device)
    else:
        finetune(a.model, a.task, a.glue_dir, GlueRun.parse(a.grid_run), device=a.device)


def _glue_select(a: argparse.Namespace) -> None:
    from effbert.train.glue import select

    select(a.model, a.task)


def _lra_data(a: argparse.Namespace) -> None:
    if a.task == "pathfinder":
        from effbert.data.lra.pathfinder_generate import generate_pathfinder

        generate_pathfinder(a.out, _settings_of(a, PathfinderSettings), resolution=a.resolution,
                            difficulty=a.difficulty)
        return
    from effbert.data.lra.listops import generate_listops

    generate_listops(a.out, _settings_of(a, ListopsSettings))


def _settings_of(a: argparse.Namespace, settings: type[BaseModel]) -> BaseModel:
    """An effbert.pipeline_config model from the flags of its fields, validated by its declaration: a bad
    value is one line naming the flag."""
    try:
        return settings(**{name: getattr(a, name) for name in settings.model_fields})
    except ValidationError as e:
        found = []
        for err in e.errors():
            msg = err["msg"].removeprefix("Value error, ")
            found.append(f"--{err['loc'][0]}: {msg} (got {err['input']!r})" if err["loc"] else msg)
        raise InputError("; ".join(found)) from None


def _lra(a: argparse.Namespace) -> None:
    from effbert.train.device import set_threads
    from effbert.train.lra import gather_lra, run_lra, train_lra

    set_threads(a.threads)
    if a.gather:
        gather_lra(a.model, a.task, runs=a.runs)
    elif a.seed is not None:
        train_lra(a.model, a.task, a.lra_dir, seed=a.seed, device=a.device)
    else:
        run_lra(a.model, a.task, a.lra_dir, device=a.device)


def _report(a: argparse.Namespace) -> None:
    from effbert.report.tables import write_report

    tables = write_report(a.models, a.out, glue_tasks=a.glue_tasks, lra_tasks=a.lra_tasks)
    if a.print:
        for name, markdown in tables.items():
            print(f"\n## {name}\n\n{markdown}")


def _bench(a: argparse.Namespace) -> None:
    import json

    from effbert.train.device import set_threads

    set_threads(a.threads)
    if a.what == "gpu":
        from effbert.bench.gpu import bench_gpu

        bench_gpu(a.out, tiny=a.tiny, device=a.device)
        return
    from effbert.bench.attention import bench_attention

    try:
        options = json.loads(a.options) if a.options else None
    except json.JSONDecodeError as e:
        raise InputError(f"--options: not JSON ({e.msg})") from None
    try:  # bench_attention checks every setting before anything runs (a failing measurement is a row)
        table = bench_attention(a.out, a.plot, device=a.device, lengths=a.lengths, mechanisms=a.mechanisms,
                                options=options, layer=a.layer, dtype=a.dtype, repeats=a.repeats)
    except (ValueError, InputError) as e:  # one line, whatever the check
        raise InputError(" ".join(str(e).split())) from None
    print(table.to_string(index=False))


def _import_hf(a: argparse.Namespace) -> None:
    import json

    from effbert.train.hf_import import import_hf_bert

    try:
        attention = json.loads(a.attention) if a.attention else None
    except json.JSONDecodeError as e:
        raise InputError(f"--attention: not JSON ({e.msg})") from None
    print(import_hf_bert(a.hf_dir, a.model, attention=attention))


def _demo_data(a: argparse.Namespace) -> None:
    from effbert.demo import write_demo

    write_demo(a.out)


def _stage(sub: argparse._SubParsersAction, name: str, run: Callable[[argparse.Namespace], None],
           help: str) -> argparse.ArgumentParser:
    """Add one subcommand (its help doubles as its description); `main` calls its `run` with the parsed args."""
    s = sub.add_parser(name, help=help, description=help)
    s.set_defaults(run=run)
    return s


def _add_settings(s: argparse.ArgumentParser, settings: type, *names: str, help_prefix: str = "") -> None:
    """--<name> for each field of an effbert.pipeline_config model, its type, default and help read from
    the field: the one declaration of each data-stage setting."""
    for name in names:
        field = settings.model_fields[name]
        annotation = field.annotation
        kind = next(t for t in (int, float, str) if t == annotation or t in getattr(annotation, "__args__", ()))
        help = f"{help_prefix}{field.description}" if field.description else help_prefix.rstrip(": ") or None
        s.add_argument(f"--{name}", type=kind, default=field.default, help=help)


def _add_runtime(s: argparse.ArgumentParser) -> None:
    """--device and --threads, for every stage that runs a model."""
    s.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: $EFFBERT_DEVICE, else a GPU if present)")
    s.add_argument("--threads", type=int, help="CPU threads for torch (Snakemake passes the job's threads)")


def _add_documents_stage(sub: argparse._SubParsersAction) -> None:
    """`effbert documents`: raw dumps -> documents."""
    s = _stage(sub, "documents", _documents,
               "raw dump -> documents (one sentence per line, blank line between documents)")
    s.add_argument("--source", required=True, choices=["wiki", "bookcorpus", "stories", "realnews"])
    s.add_argument("--input", required=True, type=Path, help="a dump file or a folder of them")
    s.add_argument("--out", required=True, type=Path)
    s.add_argument("--processes", type=int, default=1, help="worker processes (over files and chunks of files)")
    _add_settings(s, DocumentsSettings, "min_words", "chunk_mb", "max_sentences")


def _add_tokenizer_stage(sub: argparse._SubParsersAction) -> None:
    """`effbert tokenizer`: train or import a tokenizer."""
    s = _stage(sub, "tokenizer", _tokenizer, "train a tokenizer on documents, or import a tokenizer.json / vocab.txt")
    s.add_argument("--kind", choices=["bpe", "wordpiece"], default="bpe",
                   help="bpe: byte-level BPE (RoBERTa); wordpiece: BERT")
    s.add_argument("--vocab_size", type=int, default=50265)
    s.add_argument("--text", type=Path, nargs="+", help="documents folders to train on")
    s.add_argument("--from", dest="from_file", type=Path,
                   help="import instead: a tokenizer.json, a BERT vocab.txt, or a RoBERTa vocab.json (+ merges.txt)")
    s.add_argument("--merges", type=Path, help="merges.txt of a vocab.json (default: beside it)")
    s.add_argument("--lowercase", action="store_true")
    s.add_argument("--out", required=True, type=Path)


def _add_shards_stage(sub: argparse._SubParsersAction) -> None:
    """`effbert shards`: documents -> pretraining shards."""
    s = _stage(sub, "shards", _shards, "documents -> fixed-length MLM + SOP instances (numpy shards + manifest.json)")
    s.add_argument("--text", required=True, type=Path, nargs="+")
    s.add_argument("--tokenizer", required=True, type=Path)
    s.add_argument("--out", required=True, type=Path)
    s.add_argument("--max_seq_len", required=True, type=int)
    _add_settings(s, ShardRecipe, *ShardRecipe.model_fields)
    s.add_argument("--sample_probs", type=float, nargs="+",
                   help="share of each --text folder's documents kept (default: all); e.g. 1 1 0.333 0.333")
    _add_settings(s, ShardSettings, "workers")


def _add_pretrain_stage(sub: argparse._SubParsersAction) -> None:
    """`effbert pretrain`: pretraining."""
    s = _stage(sub, "pretrain", _pretrain, "pretrain a model folder's config.json on a shard set")
    s.add_argument("--model", required=True, type=Path, help="models/<name> (holding config.json)")
    s.add_argument("--shards", required=True, type=Path)
    _add_runtime(s)


def _add_glue_stage(sub: argparse._SubParsersAction) -> None:
    """`effbert glue`: GLUE fine-tuning (one grid run, or the whole grid)."""
    s = _stage(sub, "glue", _glue, "fine-tune a checkpoint on a GLUE task: one run of the config's grid"
               " (models/<name>/glue/<TASK>/<run>.json), or, without --run, every run then the selection")
    s.add_argument("--model", required=True, type=Path)
    s.add_argument("--task", required=True, help="official task name: CoLA, SST-2, MRPC, STS-B, QQP, MNLI, ...")
    s.add_argument("--glue_dir", type=Path, default=Path("glue"))
    s.add_argument("--run", dest="grid_run",
                   help="one run of the grid, named bs<batch>-lr<lr>-seed<seed>, e.g. bs32-lr3e-05-seed0")
    _add_runtime(s)


def _add_glue_select_stage(sub: argparse._SubParsersAction) -> None:
    """`effbert glue-select`: select among finished GLUE grid runs."""
    s = _stage(sub, "glue-select", _glue_select, "select among a task's finished grid runs; writes"
               " models/<name>/glue/<TASK>.json and the chosen run's submission files")
    s.add_argument("--model", required=True, type=Path)
    s.add_argument("--task", required=True)


def _add_lra_data_stage(sub: argparse._SubParsersAction) -> None:
    """`effbert lra-data`: generate ListOps or Pathfinder data; the flags of both generators share one subcommand."""
    s = _stage(sub, "lra-data", _lra_data,
               "generate ListOps (--out <lra_dir>/listops-1000: basic_{train,val,test}.tsv) "
               "or Pathfinder (--out <lra_dir>/pathfinder<res>/<difficulty>: metadata/, imgs/) in the LRA release "
               "layout")
    s.add_argument("--task", choices=["listops", "pathfinder"], default="listops")
    s.add_argument("--out", required=True, type=Path)
    _add_settings(s, ListopsSettings, "seed")  # both generators': one flag
    _add_settings(s, ListopsSettings, *(n for n in ListopsSettings.model_fields if n != "seed"),
                  help_prefix="listops: ")
    _add_settings(s, PathfinderSettings, *(n for n in PathfinderSettings.model_fields if n != "seed"),
                  help_prefix="pathfinder: ")
    s.add_argument("--resolution", type=int, default=32, choices=[32, 64, 128, 256], help="pathfinder")
    s.add_argument("--difficulty", default="curv_contour_length_14", help="pathfinder: curv_baseline, "
                   "curv_contour_length_9, curv_contour_length_14 (or easy, intermediate, hard)")


def _add_lra_stage(sub: argparse._SubParsersAction) -> None:
    """`effbert lra`: train on a Long Range Arena task."""
    s = _stage(sub, "lra", _lra, "train a model folder's attention on a Long Range Arena task: every seed of its "
               "config (lra.seeds), then models/<name>/lra/<task>.json = their mean")
    s.add_argument("--model", required=True, type=Path)
    s.add_argument("--task", default="listops",
                   choices=["listops", "text", "retrieval", "image", "pathfinder", "pathx"])
    s.add_argument("--lra_dir", type=Path, default=Path("lra/lra_release"))
    s.add_argument("--seed", type=int, help="train this seed only: models/<name>/lra/<task>/seed-<s>.json")
    s.add_argument("--gather", action="store_true", help="only gather the seeds' results into lra/<task>.json")
    s.add_argument("--runs", type=Path, nargs="+", help="with --gather: the seeds' result files, in lra.seeds order, "
                   "when another folder with the same LRA settings ran them")
    _add_runtime(s)


def _add_report_stage(sub: argparse._SubParsersAction) -> None:
    """`effbert report`: collect scores into tables."""
    s = _stage(sub, "report", _report,
               "collect every model's scores into results/{pretrain,glue,lra}.{csv,md,html} and the plots")
    s.add_argument("--models", required=True, type=Path, nargs="+", help="model folders")
    s.add_argument("--out", type=Path, default=Path("results"))
    s.add_argument("--print", action="store_true", help="print the Markdown tables")
    for benchmark in ("glue", "lra"):  # the pipeline passes its config's: a dropped task's old result is no row
        s.add_argument(f"--{benchmark}-tasks", nargs="*", metavar="TASK",
                       help=f"only these {benchmark.upper()} tasks' results (default: every result file)")


def _add_bench_stage(sub: argparse._SubParsersAction) -> None:
    """`effbert bench`: benchmarks, each a subcommand of its own."""
    s = _stage(sub, "bench", _bench, "benchmarks: attention (time and memory against n), pretrain (throughput, MFU), "
               "or gpu (the GPU figures in one command)")
    benches = s.add_subparsers(dest="what", required=True, metavar="BENCH")
    b = benches.add_parser("attention", help="forward+backward time and peak memory of every mechanism against "
                           "sequence length, torch SDPA measured in the same run")
    b.add_argument("--lengths", type=int, nargs="+", help="sequence lengths n, positive integers (default: "
                   "512..4096 on CPU, 512..16384 on a GPU)")
    b.add_argument("--mechanisms", nargs="+", help="default: every registered mechanism")
    b.add_argument("--dtype", help="float32, bfloat16, float16 (these two under autocast, as in training) or "
                   "float64 (default: float32 on CPU, bfloat16 on a GPU)")
    b.add_argument("--repeats", type=int, default=EfficiencyConfig.model_fields["repeats"].default,
                   help="timed calls per (mechanism, n), at least 1; the median is kept")
    b.add_argument("--layer", action="store_true", help="whole self-attention layers (q/k/v/output projections "
                   "included), with transformers' Nystromformer and YOSO layers as peers (hf-nystromformer, hf-yoso)")
    b.add_argument("--options", help="mechanism options as a JSON object, mechanism name -> its options as in a "
                   'model\'s attention section, e.g. \'{"nystrom": {"conv_kernel": 33}}\' '
                   "(a peer takes the options of our mechanism of the same method); an entry under a label of "
                   'its own with a "type" is a variant, a row of its own: \'{"nystrom-32": {"type": "nystrom", '
                   '"num_landmarks": 32}}\'')
    b.add_argument("--out", type=Path, default=Path("results/efficiency.csv"))
    b.add_argument("--plot", type=Path, default=Path("results/efficiency.png"))
    _add_runtime(b)
    b = benches.add_parser("gpu", help="the GPU figures in one command (under 8 minutes on one H100/H200): "
                           "attention against n up to 65536 with torch SDPA and transformers' layers as peers, "
                           "BERT-base pretraining throughput, bf16 against fp32 losses, Pre-LN against Pre-(C)RMSNorm "
                           "-> OUT/{attention,pretrain,norms}.{json,md}")
    b.add_argument("--out", type=Path, default=Path("results/gpu"))
    b.add_argument("--tiny", action="store_true", help="the same code on the CPU at toy sizes (the tests' run)")
    _add_runtime(b)
    # listed for --help; main() hands `bench pretrain ...` to effbert.bench.pretrain, which parses its own flags
    benches.add_parser("pretrain", help="BERT-base pretraining tokens/s and MFU, ours against transformers' "
                       "BertForMaskedLM in the same run (see `effbert bench pretrain --help`)")


def _add_import_hf_stage(sub: argparse._SubParsersAction) -> None:
    """`effbert import-hf`: import a HuggingFace BERT checkpoint."""
    s = _stage(sub, "import-hf", _import_hf, "import a HuggingFace BERT checkpoint folder into a model folder "
               "(checkpoints/cp-0000.pt, with any attention type)")
    s.add_argument("--from", dest="hf_dir", required=True, type=Path,
                   help="config.json + model.safetensors or pytorch_model.bin + vocab.txt or tokenizer.json")
    s.add_argument("--model", required=True, type=Path, help="models/<name>")
    s.add_argument("--attention", help='attention options as JSON, e.g. \'{"type": "nystrom", "num_landmarks": 64}\'')


def _add_convert_norm_stage(sub: argparse._SubParsersAction) -> None:
    """`effbert convert-norm`: Pre-LN -> Pre-RMSNorm / Pre-CRMSNorm (train/convert_norm.py, docs/norms.md)."""
    s = _stage(sub, "convert-norm", _convert_norm, "convert a Pre-LN checkpoint (model.norm 'pre') to Pre-RMSNorm "
               "or Pre-CRMSNorm: the same outputs")
    s.add_argument("--from", dest="source", required=True, type=Path, help="a model folder or a checkpoint file")
    s.add_argument("--checkpoint", default="last", help="in a model folder: 'last', a step, or a file name")
    s.add_argument("--to", required=True, help="pre_rmsnorm or pre_crmsnorm (checked by the conversion)")
    s.add_argument("--out", required=True, type=Path, help="the converted checkpoint's file")


def _convert_norm(a: argparse.Namespace) -> None:
    from effbert.train.convert_norm import convert_norm

    convert_norm(a.source, a.out, a.to, checkpoint=a.checkpoint)


def _add_swap_eval_stage(sub: argparse._SubParsersAction) -> None:
    """`effbert swap-eval`: efficient attention swapped into a pretrained BERT (train/swap_eval.py, docs/swap.md)."""
    s = _stage(sub, "swap-eval", _swap_eval, "swap efficient attention into a pretrained BERT folder and measure "
               "what survives: similarity to the original (zero-shot and after masked-LM steps) beside each "
               "mechanism's time and memory -> results/swap.{csv,md,png}")
    s.add_argument("--from", dest="hf_dir", required=True, type=Path, help="a HuggingFace BERT folder")
    s.add_argument("--text", required=True, type=Path,
                   help="a documents folder (part-*.txt) or a MediaWiki dump (.xml.bz2): one passage per document")
    s.add_argument("--variants", nargs="+", default=SwapConfig.model_fields["variants"].default,
                   help=SwapConfig.model_fields["variants"].description)
    _add_settings(s, SwapConfig, "passages", "adapt_steps", "cost_length")
    s.add_argument("--max_len", type=int, help="tokens per compared passage (default: 512, or the BERT's "
                   "max_position_embeddings when fewer)")
    s.add_argument("--sts", type=Path, help="a GLUE folder with STS-B/dev.tsv: Spearman of embedding cosine")
    s.add_argument("--adapt_lr", type=float, help="default: train.swap_eval.Adaptation's (3e-5)")
    s.add_argument("--adapt_batch", type=int, help="passages per step (default: Adaptation's, 8)")
    s.add_argument("--adapt_len", type=int, help="tokens per adaptation row (default: Adaptation's, 128)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", type=Path, default=Path("results"))
    s.add_argument("--device", help="cpu, cuda, ... (default: $EFFBERT_DEVICE, else a GPU if present)")
    s.add_argument("--threads", type=int, help="CPU threads for torch")


def _swap_eval(a: argparse.Namespace) -> None:
    from effbert.bench.swap import run_swap, swap_markdown
    from effbert.layout import SWAP_TABLE, report_table
    from effbert.train.device import pick_device, set_threads
    from effbert.train.swap_eval import Adaptation, SwapSettings

    set_threads(a.threads)
    given = {"lr": a.adapt_lr, "batch_size": a.adapt_batch, "max_len": a.adapt_len}
    given = {k: v for k, v in given.items() if v is not None}  # unset: Adaptation's defaults
    adaptation = Adaptation(a.adapt_steps, **given) if a.adapt_steps else None
    settings = SwapSettings(max_len=a.max_len, adaptation=adaptation, sts_dir=a.sts, seed=a.seed,
                            device=str(pick_device(a.device)))
    table = run_swap(a.hf_dir, a.text, a.out, variants=a.variants, passages=a.passages, settings=settings,
                     cost_length=a.cost_length)
    print(swap_markdown(table, f"wrote {report_table(a.out, SWAP_TABLE, 'csv')}"))


def _add_demo_data_stage(sub: argparse._SubParsersAction) -> None:
    """`effbert demo-data`: write the demo's inputs."""
    s = _stage(sub, "demo-data", _demo_data, "write the demo's inputs (a MediaWiki dump and GLUE-layout tasks)")
    s.add_argument("--out", type=Path, default=Path("demo"))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="effbert", description=__doc__)
    sub = p.add_subparsers(dest="stage", required=True, metavar="STAGE")
    # in pipeline order: the order of `effbert --help`
    for add_stage in (_add_documents_stage, _add_tokenizer_stage, _add_shards_stage, _add_pretrain_stage,
                      _add_glue_stage, _add_glue_select_stage, _add_lra_data_stage, _add_lra_stage,
                      _add_report_stage, _add_bench_stage, _add_import_hf_stage, _add_convert_norm_stage,
                      _add_swap_eval_stage, _add_demo_data_stage):
        add_stage(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:2] == ["bench", "pretrain"]:  # its own flags (and --help) belong to effbert.bench.pretrain
        from effbert.bench.pretrain import main as bench_pretrain

        return _reported("bench pretrain", lambda: bench_pretrain(argv[2:]))
    args = build_parser().parse_args(argv)
    return _reported(args.stage, lambda: args.run(args))


def _reported(stage: str, run: Callable[[], object]) -> int:
    """Run a stage; the errors a user can cause (or a machine's, for OSError) as one line, and the exit status."""
    try:
        run()
    except InputError as e:
        print(f"effbert {stage}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a path that is not what it should be (the user's to fix: 2), or the machine's fault
        where = f"{e.filename}: " if e.filename else ""
        print(f"effbert {stage}: error: {where}{e.strerror or e}; nothing was left half-written", file=sys.stderr)
        return 2 if isinstance(e, _PATH_ERRORS) else 1  # else a full disk, a file size limit, a lost mount
    return 0


# errors of a path given (a folder where a file belongs, a missing or unreadable one): the input's, exit status 2
_PATH_ERRORS = (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError, FileExistsError)


if __name__ == "__main__":
    sys.exit(main())
