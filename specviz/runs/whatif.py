"""The what-if panel's replay of a finished greedy run under other shapes and builders (decoding/whatif.py)."""
from __future__ import annotations

from ..config import EXIT_LAYER, NGRAM, ConfigError
from ..decoding.drafters import PromptLookupDrafter
from ..decoding.registry import BuildContext, get_method
from ..decoding.retrieval import NgramTreeDrafter, RetrievalDrafter
from ..decoding.whatif import what_if as replay
from ..models.early_exit import early_exit_model
from ..models.trained import trained_kind
from .corpus import load_datastores


def what_if(store, prepared, prompt_ids, output_ids) -> list:
    if not prepared.settings.greedy:
        raise ConfigError("the what-if replay needs a greedy run (temperature 0): only then is the output "
                          "the same for every drafter")
    if len(output_ids) == 0:
        raise ConfigError("nothing was generated yet: run or step first")
    target = prepared.target.model
    knobs = prepared.settings.knobs
    kind = trained_kind(prepared.method.uses_trained) if prepared.method.uses_trained else None
    replay_model = kind.replay_model(target, prepared.trained) if kind is not None else None
    if prepared.draft is not None:
        model, label = prepared.draft.model, "draft model"
    elif replay_model is not None:
        model, label = replay_model, kind.label
    else:
        n_layers = getattr(target.config, "num_hidden_layers", 2)
        k = min(int(knobs.get("exit_layer", EXIT_LAYER.default)), n_layers - 1)
        model, label = early_exit_model(target, k), f"early exit, {k} layers"
    n = int(knobs.get("ngram", NGRAM.default))
    shipped = load_datastores(store, prepared.target, "shipped")
    builders = {
        f"prompt lookup (chain 3, n≤{n})": PromptLookupDrafter(n, 3),
        f"n-gram tree (depth 5, 32 nodes, n≤{n})": NgramTreeDrafter(n, 5, 32),
        "retrieval: context (32 nodes)": RetrievalDrafter({}, True, n, 5, 32),
        "retrieval: context+shipped (32 nodes)": RetrievalDrafter(shipped, True, n, 5, 32),
    }
    if prepared.costs is not None:
        # the auto method, learning and sizing its drafts on this machine's curve as it would in a run
        auto = get_method("auto")
        knobs_auto = auto.check_knobs({"ngram": n})
        builders[AUTO_ROW] = auto.make(BuildContext(target, knobs_auto, prepared.settings.sampling,
                                                    datastores=shipped, costs=prepared.costs))
    rows = replay(model, label, builders, prompt_ids, output_ids)
    # the model rows draft with the run's own drafter unless the run has none and the replay fell back on
    # the default early exit
    own_drafter = prepared.draft is not None or replay_model is not None or \
        (prepared.method.uses_draft_model and "exit_layer" in knobs)
    own = own_setting_name(prepared.settings.method, knobs)
    for row in rows:
        row.own_drafter = own_drafter and row.family != "model-free"
        row.own_setting = row.name == own
    return rows


AUTO_ROW = "auto (n-gram tree + shipped corpus, sized by cost)"


def own_setting_name(method: str, knobs: dict) -> str | None:
    """The name of the what-if row that replays the run's own setting, when one does."""
    n = knobs.get("ngram", NGRAM.default)
    default_tree = knobs.get("depth") == 5 and knobs.get("budget") == 32
    if method == "sps":
        return f"chain-{knobs.get('draft_len')}"
    if method in ("static_tree", "medusa"):
        return knobs.get("preset")
    if method == "prompt_lookup" and knobs.get("draft_len") == 3:
        return f"prompt lookup (chain 3, n≤{n})"
    if method == "ngram_tree" and default_tree:
        return f"n-gram tree (depth 5, 32 nodes, n≤{n})"
    if method == "auto" and knobs.get("depth") == 8 and knobs.get("corpus") == "shipped":
        return AUTO_ROW
    if method == "retrieval" and default_tree and knobs.get("corpus") in ("context", "context+shipped"):
        return f"retrieval: {knobs['corpus']} (32 nodes)"
    return None
