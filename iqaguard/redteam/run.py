"""`python -m iqaguard.redteam` (`make redteam PROFILE=...`): adaptive black-box and white-box attacks
against a served model set, written into the set's report.

Images: the build's held-out evaluation images (the same split the build evaluates on); only those the
served ensemble answers correctly (where labels exist) and accepts are attacked. The attacks run on a
server that has not seen those clean images (a restarted one, when this run started it). Ordinary-traffic
flags of the probe memory are read from the server's metrics. Writes <reports>/redteam.json and a section
between markers in <reports>/report.md (created if missing). docs/threat-model.md explains the figures.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import TypeVar

import numpy as np
import tritonclient.http as httpclient
from PIL import Image

from iqaguard.contract import MONITOR, VERDICT_ACCEPT
from iqaguard.launcher.embedded import Endpoints, server_for
from iqaguard.log import cli_logging
from iqaguard.loopback import require_loopback
from iqaguard.operations.prometheus_text import SETTLE_S, family_total, scrape
from iqaguard.operations.rollout import find_set
from iqaguard.redteam.oracle import ServedOracle
from iqaguard.redteam.square import attack_loss, evasion_rates, square_attack
from iqaguard.redteam.whitebox import GuardMembers, guard_pgd
from iqaguard.repository.layout import default_repository
from iqaguard.repository.live import live_version
from iqaguard.repository.manifest import read_manifest
from iqaguard.repository.sets import ModelSet, set_ensemble
from iqaguard.training.config import BuildConfig
from iqaguard.training.profiles import PROFILES
from iqaguard.training.splits import load_data

log = logging.getLogger(__name__)
T = TypeVar("T")
SECTION_START, SECTION_END = "<!-- redteam:start -->", "<!-- redteam:end -->"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m iqaguard.redteam", description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="fashion", choices=sorted(PROFILES))
    parser.add_argument("--images", type=Path, help="the photo folder the set was built from (folder profiles)")
    parser.add_argument("--set-name", help="the set to attack (default: the profile's name)")
    parser.add_argument("--ensemble", help="default: robust_classifier_<set>")
    parser.add_argument("--count", type=int, default=100, help="images attacked per budget (default: %(default)s)")
    parser.add_argument("--eps", default="2,4,8,16", help="L∞ budgets in 8-bit levels (/255), comma-separated")
    parser.add_argument("--budgets", default="100,400,1000", help="query budgets reported (the largest is run)")
    parser.add_argument("--whitebox-steps", type=int, default=50, help="PGD steps of the white-box attack (0: skip)")
    parser.add_argument("--seed", type=int, default=0, help="the attacks' seed (images: the build's split)")
    parser.add_argument("--repository", type=Path, default=default_repository())
    parser.add_argument("--reports", type=Path, help="default: reports/<set> beside the repository")
    parser.add_argument("--grpc-url", default="127.0.0.1:8001")
    parser.add_argument("--http-url", default="127.0.0.1:8000")
    parser.add_argument("--metrics-url", default="127.0.0.1:8002", help="a running server's metrics port")
    parser.add_argument("--no-serve", action="store_true", help="fail instead of starting the embedded server")
    return parser.parse_args(argv)


# The build options that decide a build's splits (read back from its manifest, so the red team attacks the very
# images that build held out, whatever --calib-images, --frr-confidence or --size it was given).
SPLIT_OPTIONS = ("seed", "subset", "test_images", "calib_images", "eval_clean", "fit_pool", "target_fpr",
                 "frr_confidence", "size")


def build_options(repository: Path, model_set: ModelSet) -> dict[str, object]:
    """The split-deciding options of the live version's build, from its detector manifest's `config`."""
    version = live_version(repository, model_set)
    manifest = read_manifest(Path(repository) / model_set.members[-1] / str(version))
    recorded = manifest.get("config") or {}
    return {name: recorded[name] for name in SPLIT_OPTIONS if recorded.get(name) is not None}


def held_out_images(profile_name: str, images: Path | None,
                    options: Mapping[str, object]) -> tuple[np.ndarray, np.ndarray | None]:
    """The build's clean evaluation images as uint8 [N,H,W,3], with their labels where the set has them."""
    config = BuildConfig(profile=profile_name, images=images, cache_dir=None, **options)
    profile = PROFILES[profile_name]
    if config.frr_confidence is None:  # resolved as the build resolves it (training.config.prepare)
        config.frr_confidence = profile.frr_confidence
    if config.size is not None:
        profile = replace(profile, size=(config.size, config.size))
    data = load_data(config, profile)
    return np.ascontiguousarray(data.eval.pixels.transpose(0, 2, 3, 1)), data.eval.labels


def attackable(
    oracle: ServedOracle, images: np.ndarray, labels: np.ndarray | None, count: int
) -> tuple[list[int], list[int], int]:
    """Indices of up to `count` images the served set accepts (and answers correctly, where labels exist), in
    split order, the served class of every image examined, and how many were examined to find them."""
    chosen: list[int] = []
    classes: list[int] = []
    chunk = max(64, 2 * count)
    while len(chosen) < count and len(classes) < len(images):
        start = len(classes)
        for offset, answer in enumerate(oracle(images[start : start + chunk])):
            index, answer_class = start + offset, int(np.argmax(answer.probs))
            classes.append(answer_class)
            if len(chosen) < count and answer.verdict == VERDICT_ACCEPT and (
                labels is None or answer_class == int(labels[index])
            ):
                chosen.append(index)
    return chosen, classes, len(classes)


def metrics_endpoint(at: Endpoints, args: argparse.Namespace) -> str:
    """The metrics URL of the server the red team talks to: its own, else the one given for a running server."""
    return at.metrics_url or f"http://{args.metrics_url}/metrics"


def probe_flags_during(metrics_url: str, set_name: str, action: Callable[[], T]) -> tuple[T, float]:
    """Run `action`; return its result and how many probe-memory flags the server counted for the set
    meanwhile (iqaguard_probe_flags_total)."""

    def flags() -> float:
        return family_total(scrape(metrics_url), "iqaguard_probe_flags_total", set=set_name)

    before = flags()
    result = action()
    time.sleep(SETTLE_S)
    return result, flags() - before


def resent_copies(images: np.ndarray) -> np.ndarray:
    """Ordinary traffic that re-sends one scene: each image as five JPEG re-encodings (quality 95 to 75)."""
    return np.stack([jpeg_round_trip(image, quality) for image in images for quality in (95, 90, 85, 80, 75)])


def jpeg_round_trip(image: np.ndarray, quality: int) -> np.ndarray:
    """`image` as a client re-encoding it as JPEG at `quality` would send it (uint8 [H,W,3])."""
    buffer = io.BytesIO()
    Image.fromarray(image, mode="RGB").save(buffer, format="JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))


def run(args: argparse.Namespace) -> dict[str, object]:
    set_name = args.set_name or args.profile
    ensemble = args.ensemble or set_ensemble(set_name)
    eps_levels = [int(e) for e in args.eps.split(",")]
    budgets = sorted(int(b) for b in args.budgets.split(","))
    options = build_options(args.repository, find_set(args.repository, set_name))
    images, labels = held_out_images(args.profile, args.images, options)
    results: dict[str, object] = {"set": set_name, "ensemble": ensemble, "attacker": "black-box, Square-attack "
                                  "random search on PROBS, SUSPICION and VERDICT", "budgets": budgets}  # fmt: skip
    # Each attack gets its own images: the server's probe memory would otherwise see one attack's queries
    # as the neighbours of the next one's.
    groups = len(eps_levels) * (2 if args.whitebox_steps > 0 else 1)
    log_path = Path("triton-redteam.log")
    with server_for(args.grpc_url, args.http_url, args.repository, log_path, not args.no_serve) as at:
        results["probe_memory"] = served_probe_rule(at.http_url, find_set(args.repository, set_name))
        external = not at.started_here
        oracle = ServedOracle(at.grpc_url, ensemble)
        try:
            (chosen, classes, examined), flagged = probe_flags_during(
                metrics_endpoint(at, args), set_name, lambda: attackable(oracle, images, labels, args.count * groups))
            ordinary: dict[str, object] = {"clean_once": {"images": examined, "flagged": flagged}}
        finally:
            oracle.close()
    per_group = len(chosen) // groups
    results["candidates"], results["attacked"] = examined, per_group
    # The selection sent the clean images; an attacker need not, and the server's memory would hold them as
    # the first answers around every attacked image. A fresh server forgets them; a server we did not start
    # keeps them, and the results say so.
    results["clean_images_remembered"] = external
    if external:
        log.warning("attacking a server this run did not start: its probe memory holds the clean images")
    group = iter(np.array_split(np.array(chosen[: per_group * groups], dtype=int), groups))
    with server_for(args.grpc_url, args.http_url, args.repository, log_path, not args.no_serve) as at:
        oracle = ServedOracle(at.grpc_url, ensemble)
        try:
            # Ordinary traffic: images no attack uses (re-encodings of an attacked image would fall in its
            # region of the server's memory and flag the attack for the wrong reason), each re-sent.
            spare = np.setdiff1d(np.arange(examined), chosen[: per_group * groups])[:200]
            if len(spare):
                copies = resent_copies(images[spare])
                _, flagged = probe_flags_during(metrics_endpoint(at, args), set_name, lambda: oracle(copies))
                ordinary["jpeg_resent_5x"] = {"images": len(copies), "flagged": flagged}
            results["probe_memory_on_ordinary_traffic"] = ordinary
            per_eps = {}
            for eps in eps_levels:
                index = next(group)
                started, before = time.monotonic(), oracle.queries
                outcomes = square_attack(oracle, images[index], [classes[i] for i in index], eps, budgets[-1],
                                         np.random.default_rng(args.seed))  # fmt: skip
                rates = evasion_rates(outcomes, budgets)
                per_eps[f"{eps}/255"] = {
                    "evasion": {str(b): rate for b, rate in rates.items()},
                    "median_queries_to_evade": float(np.median([o.queries for o in outcomes if o.evaded]))
                    if any(o.evaded for o in outcomes) else None,
                    "first_query_evasion": sum(o.evaded and o.queries == 1 for o in outcomes) / max(len(outcomes), 1),
                    "queries": oracle.queries - before, "seconds": round(time.monotonic() - started, 1),
                }  # fmt: skip
                log.info("eps %d/255: evasion %s", eps, ", ".join(f"{b} q {r:.1%}" for b, r in rates.items()))
            results["black_box"] = per_eps
            if args.whitebox_steps > 0:
                results["white_box"] = white_box(args, set_name, oracle, images, classes, group, eps_levels)
        finally:
            oracle.close()
    return results


def served_probe_rule(http_url: str, model_set: ModelSet) -> dict[str, str]:
    """The probe-memory parameters of the set's guard_monitor as the server runs it."""
    client = httpclient.InferenceServerClient(http_url)
    try:
        config = client.get_model_config(model_set.model(MONITOR))
    finally:
        client.close()
    parameters = config.get("parameters", {})
    return {key: value["string_value"] for key, value in parameters.items() if key.startswith("probe_")}


def white_box(
    args: argparse.Namespace, set_name: str, oracle: ServedOracle, images: np.ndarray, classes: list[int],
    groups: Iterator[np.ndarray], eps_levels: list[int],
) -> dict[str, object]:
    """PGD through the live version's members; an evasion counts only when the served ensemble confirms it."""
    model_set = find_set(args.repository, set_name)
    version = live_version(args.repository, model_set)
    members = GuardMembers.load(args.repository, model_set, version)
    per_eps: dict[str, object] = {"version": version, "steps": args.whitebox_steps}
    for eps in eps_levels:
        index = next(groups)
        original = [classes[i] for i in index]
        started = time.monotonic()
        outcomes = guard_pgd(members, images[index], original, eps, args.whitebox_steps,
                             np.random.default_rng(args.seed))  # fmt: skip
        served = oracle(np.stack([o.image for o in outcomes])) if outcomes else []
        confirmed = [o.evaded and attack_loss(a, label)[1] for o, a, label in zip(outcomes, served, original,
                                                                                   strict=True)]  # fmt: skip
        per_eps[f"{eps}/255"] = {
            "evasion": sum(confirmed) / max(len(outcomes), 1),
            "in_process_evasion": sum(o.evaded for o in outcomes) / max(len(outcomes), 1),
            "seconds": round(time.monotonic() - started, 1),
        }
        log.info("white-box eps %d/255: evasion %.1f%% (served-confirmed)", eps, 100 * per_eps[f"{eps}/255"]["evasion"])
    return per_eps


def section(results: dict[str, object]) -> str:
    """The report's markdown section for these results."""
    budgets = results["budgets"]
    lines = [SECTION_START, "## Adaptive attacks (red team)", "",
             f"Attacker: {results['attacker']}, against `{results['ensemble']}` as any client reaches it "
             f"(8-bit PNG, the served path). {results['attacked']} held-out images per attack and budget (each "
             f"attack its own, from the {results['candidates']} examined: those the set accepted and answered "
             "correctly, where labels exist). Evasion: the teacher's answer changed and the verdict is `accept`.",
             "", f"Probe memory as served: {_probe_text(results)}", "",
             "| L∞ | " + " | ".join(f"{b} queries" for b in budgets) + " | median queries to evade | at query 1 |",
             "|---|" + "---|" * (len(budgets) + 2)]  # fmt: skip
    for eps, row in results["black_box"].items():
        cells = " | ".join(f"{row['evasion'][str(b)]:.1%}" for b in budgets)
        median = row["median_queries_to_evade"]
        first = row.get("first_query_evasion")
        lines.append(f"| {eps} | {cells} | {'—' if median is None else f'{median:.0f}'} | "
                     f"{'—' if first is None else f'{first:.1%}'} |")  # fmt: skip
    probe = results.get("probe_memory_on_ordinary_traffic")
    if probe:
        once = probe["clean_once"]
        resent = probe.get("jpeg_resent_5x", {"flagged": 0, "images": 0})
        lines += ["", "Probe memory on ordinary traffic (verdicts it turned from `accept` to `adversarial`, counted "
                  f"by the server's iqaguard_probe_flags_total): {once['flagged']:.0f} of {once['images']} held-out "
                  f"clean images sent once; {resent['flagged']:.0f} of {resent['images']} JPEG re-encodings "
                  "(quality 95 to 75) of other held-out images, five of each sent one after the other."]
    if "white_box" in results:
        white = results["white_box"]
        lines += ["", f"White-box (PGD, {white['steps']} steps, through the exported teacher, student and detector of "
                  f"v{white['version']}; BRISQUE recomputed each step but given no gradient, BPDA): an evasion counts "
                  "only when the served ensemble confirms it.", "",
                  "| L∞ | evasion (served) | in-process |", "|---|---|---|"]
        lines += [f"| {eps} | {row['evasion']:.1%} | {row['in_process_evasion']:.1%} |"
                  for eps, row in white.items() if isinstance(row, dict)]  # fmt: skip
    return "\n".join([*lines, "", SECTION_END, ""])


def _probe_text(results: dict[str, object]) -> str:
    rule = results.get("probe_memory") or {}
    if rule.get("probe_memory", "true").lower() != "true":
        return "**off** (`probe_memory: \"false\"`)."
    described = ", ".join(f"{key.removeprefix('probe_')} {value}" for key, value in rule.items()
                          if key != "probe_memory")  # fmt: skip
    remembered = ("the server held the clean images from the selection (it was not started by this run)"
                  if results.get("clean_images_remembered") else "a fresh server: the clean images were not sent to it")
    return f"on ({described}); {remembered}."


def write_section(report: Path, text: str) -> None:
    """Put `text` into report.md between the markers, replacing an earlier red-team section."""
    body = report.read_text() if report.is_file() else ""
    if SECTION_START in body and SECTION_END in body:
        head, rest = body.split(SECTION_START, 1)
        body = head + text.rstrip("\n") + rest.split(SECTION_END, 1)[1]
    else:
        body = body.rstrip("\n") + ("\n\n" if body else "") + text
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(body)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cli_logging()
    require_loopback("the red team", args.grpc_url, args.http_url, args.metrics_url)
    results = run(args)
    reports = args.reports or args.repository.resolve().parent / "reports" / results["set"]
    reports.mkdir(parents=True, exist_ok=True)
    (reports / "redteam.json").write_text(json.dumps(results, indent=2) + "\n")
    write_section(reports / "report.md", section(results))
    print(section(results))
    print(f"written: {reports / 'redteam.json'}, section in {reports / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
