"""The Learn tab's lessons: a guided path through speculative, diffusion and Jacobi decoding on the live model.

Each lesson is data: a goal, a short explanation, a prepared run (prompt and the exact settings dict its tab's
`collect_settings` produces, so the run never depends on the tab's defaults), the view to look at, what to notice
in it, one question with its answer, and one change to try. `?lesson=<slug>` opens the app on a lesson.

Every figure quoted in a `notice` was measured on the embedded SmolLM2-135M-Instruct on a 2-core laptop-class CPU,
through the app's own path (`runs.prepare_run` / `runs.prepare_lattice_run`, `decoder(ids, record=True)`, and
`runs.compare_with_ar` for the speedup). Token counts, τ and acceptance are deterministic; timings move with the
machine's load (the machine was shared while they were taken), so the notices give them as rough figures.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..config import EMBEDDED_MODEL_ID
from ..settings import TINY_MDM_ID

SPECULATIVE, DIFFUSION = "speculative", "diffusion"

PRIMES = "List the first ten prime numbers, one per line."
CAT = "Write one sentence about a cat sitting on a warm windowsill."
SKY = "Explain in three sentences why the sky is blue."
CODE = ("Rewrite this Python function with type hints and a docstring, keeping the body unchanged:\n\n"
        "def moving_average(values, window):\n    out = []\n    for i in range(len(values) - window + 1):\n"
        "        out.append(sum(values[i:i + window]) / window)\n    return out")
BASIL = "How do I keep basil alive on a kitchen windowsill?"


@dataclass(frozen=True)
class Lesson:
    slug: str  # deep link ?lesson=<slug>, lowercase-with-dashes
    title: str  # short, e.g. "1 · Plain decoding"
    goal: str  # one sentence
    explain: str  # markdown, 80-160 words, plain words
    tab: str  # "speculative" or "diffusion": the tab the prepared run opens in
    prompt: str
    settings: dict  # exactly the dict that tab's `collect_settings` produces / its /run API takes
    look_at: str  # the view to look at, named as the tab labels it
    notice: str  # markdown: what to notice in it, with the figures this run shows
    question: str  # one question that checks understanding
    answer: str  # its answer (markdown, 1-3 sentences)
    try_change: str  # markdown: one change to try, naming the control and the value
    steps: int | None = None  # None: the whole run (Run); k: stop after k steps (Step k times)
    short: str = ""  # the label under its number in the lesson bar (nine must fit on one line)


def _spec(method: str, knobs: dict | None = None, max_new_tokens: int = 48, temperature: float = 0.0,
          top_p: float = 1.0, seed: int = 0) -> dict:
    """A Speculative-tab settings dict, complete, in the order `speculative.collect_settings` builds it."""
    return {"method": method, **(knobs or {}), "max_new_tokens": max_new_tokens, "temperature": temperature,
            "top_p": top_p, "seed": seed, "target": EMBEDDED_MODEL_ID, "draft": ""}


def _diffusion(schedule: str, threshold: float, gen_length: int = 32) -> dict:
    """A Diffusion-tab settings dict for the shipped toy model, every knob given (the tab's defaults may move)."""
    return {"method": "diffusion", "schedule": schedule, "block_size": 8, "steps": 16, "threshold": threshold,
            "prophet_gap": 1.0, "remask_below": 0.4, "adaptive_block": False, "delimiter_threshold": 0.3,
            "cache": "auto", "model": TINY_MDM_ID, "gen_length": gen_length, "temperature": 0.0, "seed": 0}


def _jacobi(window: int, gen_length: int = 48) -> dict:
    return {"method": "jacobi", "window": window, "model": EMBEDDED_MODEL_ID, "gen_length": gen_length,
            "temperature": 0.0, "seed": 0}


LESSONS: tuple[Lesson, ...] = (
    Lesson(
        slug="plain-decoding",
        title="1 · Plain decoding",
        short="Plain decoding",
        goal="See that an ordinary language model pays one full forward pass of the network for every token it writes.",
        explain=(
            "A language model writes text one token at a time. To choose the next token it runs the whole network "
            "over the text so far (the earlier tokens are cached, so only the new one is computed) and gets a "
            "probability for every word piece in its vocabulary. Greedy decoding takes the most likely one, appends "
            "it, and runs the network again. So a 48-token answer costs 48 forward passes, one after another: the "
            "second cannot start before the first has chosen its token.\n\n"
            "On a small model most of that time goes to reading the weights and launching the work, not to "
            "arithmetic, so scoring one token or a handful costs almost the same. Every other lesson exploits that "
            "gap. This plain run is also the reference: a lossless method must reproduce its text exactly."),
        tab=SPECULATIVE,
        prompt=PRIMES,
        settings=_spec("ar"),
        look_at="Metrics",
        notice=(
            "48 tokens took **48 target forwards**: τ (tokens per forward) is exactly 1. On this laptop CPU the run "
            "took about 2–3 s, roughly **40–65 ms per token** (15–24 tokens/s, depending on what else the machine "
            "was doing). The answer is *\"2, 3, 5, 7, 11, 13, 17, 19, 21, 23, 25, …\"*: the 135M model gets the "
            "primes wrong after 19. Keep that in mind: the lossless methods that follow will repeat this mistake "
            "word for word, because they change the speed, never the text."),
        question="If the answer were 200 tokens long, how many target forward passes would plain decoding need, "
                 "and could any of them run at the same time?",
        answer="200, one per token (plus the one pass over the prompt), and none can run in parallel: each pass "
               "needs the token the previous pass chose.",
        try_change="Set **max_new_tokens** to **96**: the forwards double to 96 and so does the decoding time, "
                   "while τ stays at 1.",
    ),
    Lesson(
        slug="draft-and-verify",
        title="2 · Draft and verify",
        short="Draft & verify",
        goal="Watch a cheap drafter guess a few tokens ahead and the target check all of the guesses in one pass.",
        explain=(
            "Speculative decoding splits each step in two. A cheap **drafter** guesses the next few tokens; here it is "
            "the target's own first 24 of 30 layers with the final layer norm and output head bolted on (an "
            "*early exit*). Then the full **target** scores the whole guessed chain in a single forward pass, "
            "because it can read all positions at once.\n\n"
            "Going left to right, a guess is **accepted** while it equals the token the target itself would pick; "
            "the first mismatch is **rejected**, and everything after it is thrown away. The target's own choice at "
            "that point is committed instead (a *correction*). If every guess survives, the same pass has already "
            "computed the target's next token for free: the **bonus** token. So each step commits between 1 and "
            "draft length + 1 tokens, and the text is the one plain decoding writes."),
        tab=SPECULATIVE,
        prompt=PRIMES,
        settings=_spec("sps", {"draft_len": 4, "exit_layer": 24}),
        look_at="Draft tree",
        notice=(
            "The run needs **19 steps for 48 tokens: τ ≈ 2.5** tokens per target forward. Of 74 drafted tokens "
            "**29 were accepted (39%)**. Scrub through the steps: in steps 1–7 (the wording *\"The first ten prime "
            "numbers are\"*) every draft is rejected and only the correction is kept, while in the list of digits "
            "the drafter does well. **Step 8 accepts all four drafts and adds the bonus token: 5 tokens from one "
            "target forward.** The text is identical to lesson 1's, mistakes included. Yet on this laptop CPU the "
            "run is *slower* than plain decoding (about 0.5× AR): the 24-layer drafter costs almost as much as the "
            "30-layer target. Lesson 7 comes back to that."),
        question="A step drafts 4 tokens and the target rejects the 2nd. How many tokens does the step commit, "
                 "and which are they?",
        answer="Two: the accepted 1st draft, then the target's own token at position 2 (the correction). Drafts "
               "3 and 4 are discarded unseen, since they were built on the rejected 2nd token.",
        try_change="Set **exit_layer** to **20**: the drafter gets cheaper but much worse, and acceptance falls "
                   "to 11 of 141 drafts (8%), τ ≈ 1.3.",
    ),
    Lesson(
        slug="lossless-sampling",
        title="3 · Why it is lossless under sampling",
        short="Lossless sampling",
        goal="See the test that lets a sampled draft through with probability min(1, p/q), and the residual "
             "distribution that repairs a rejection.",
        explain=(
            "With temperature above 0 the target does not pick *the* best token, it samples one. A draft can no "
            "longer be checked by equality, so each drafted token x is tested with a coin flip. Let q be the "
            "probability the drafter gave x when it sampled it and p the probability the target gives x. The draft "
            "is kept with probability **min(1, p/q)**: always if the target likes x at least as much as the "
            "drafter did, less often if the drafter was over-eager.\n\n"
            "On a rejection the replacement is sampled from the **residual**: the target's distribution minus the "
            "drafter's, negatives clipped to zero, renormalised. It puts weight exactly where the target wanted "
            "more than the drafter offered. Accepted drafts plus residual draws add up to the target's own "
            "distribution, token by token, so the text is distributed exactly as if the target had sampled alone."),
        tab=SPECULATIVE,
        prompt=CAT,
        settings=_spec("sps", {"draft_len": 4, "exit_layer": 24}, temperature=0.7, seed=0),
        look_at="Why it is lossless: the rejection-sampling test of this step",
        notice=(
            "Step 3 times and read step 3 (seed 0 makes it repeatable). The drafter proposed *\", a ␣ 1\"*. "
            "**\",\"**: q = 0.46, p = 0.31, so it passes with min(1, 0.31/0.46) = **0.67**; the uniform drawn was "
            "0.22, below 0.67, so it is **accepted**. **\" a\"**: q = 0.83, p = 0.89, p > q, so the acceptance "
            "probability is **1**. **\"␣\"** (a bare space): q = 1.00 but p ≈ 0, so it is **rejected** (uniform "
            "0.57). The replacement comes from the residual, whose top is *curious* 0.28, *gentle* 0.15, "
            "*majestic* 0.09, *fluffy* 0.09; this time it drew **\" majestic\"**, so the step commits "
            "*\", a majestic\"*. Steps 1 and 2 reject their first draft outright, with acceptance 0."),
        question="A drafted token has q = 0.5 and p = 0.2. How often is it accepted, and if it is rejected, can the "
                 "same token be drawn from the residual?",
        answer="It is accepted 40% of the time (0.2 / 0.5). It cannot come back from the residual: there p − q is "
               "negative for that token, so its residual weight is zero, which is exactly what cancels the excess "
               "0.5 − 0.2 the drafter gave it.",
        try_change="Set **seed** to **3** and step again: the draws change, and so does the text (*\"The cat, Luna, "
                   "had settled…\"*), yet every test still uses min(1, p/q).",
        steps=3,
    ),
    Lesson(
        slug="trees",
        title="4 · Draft trees",
        short="Trees",
        goal="See why offering the target several alternatives per position raises the accepted length, and how "
             "one forward pass checks them all.",
        explain=(
            "A chain bets everything on the drafter's first choice at each position: one miss and the step ends. A "
            "**tree** hedges: here each drafted node gets two children, the drafter's best and second-best next "
            "token, three levels deep (14 nodes). The target accepts the longest branch that matches its own "
            "choices.\n\n"
            "All 14 nodes are still scored in **one** target forward. They are laid out as one flat sequence, and "
            "an **ancestor mask** decides who may attend to whom: each node sees the prompt, itself and its own "
            "ancestors, never a sibling or a cousin. To every node the computation looks exactly like a plain "
            "chain, so each branch gets the probabilities it would get on its own. The price is more tokens per "
            "verify, which costs more as trees grow."),
        tab=SPECULATIVE,
        prompt=PRIMES,
        settings=_spec("static_tree", {"preset": "binary-14", "exit_layer": 24}),
        look_at="Draft tree",
        notice=(
            "Same drafter and prompt as lesson 2. The tree needs **18 steps for 48 tokens: τ ≈ 2.67** (the chain: "
            "19 steps, τ 2.53). The gain is at the first position: a step accepts at least one token in **72%** of "
            "steps against 58% for the chain, because when the best guess is wrong the second-best is often right. "
            "Per node, acceptance drops to 30 of 244 drafted nodes (12%): most siblings must lose. In the mask "
            "under the tree, each row lights up only its node's ancestors: read a row to trace one branch back to "
            "the root. The text is again identical to plain decoding."),
        question="Two sibling nodes in the same tree both sit at the position right after the root. Why must the "
                 "mask stop each from attending to the other?",
        answer="They are alternatives for the same position, not consecutive text. If one could attend to the other, "
               "the target would score it as if the sibling came before it, and its probability would not be the "
               "one plain decoding would compute.",
        try_change="Set **preset** to **chain-4**: the same drafter in a single line of 4, back to τ 2.53 with fewer "
                   "nodes to verify.",
    ),
    Lesson(
        slug="draft-sources",
        title="5 · Where drafts come from",
        short="Draft sources",
        goal="See that a draft does not need a model at all when the answer copies text that is already there.",
        explain=(
            "A draft only has to be a good guess; where it comes from does not matter, since the target checks "
            "every token anyway. **Prompt lookup** uses no network: it takes the last three tokens written, "
            "searches the prompt and the text so far for the same three tokens, and drafts whatever followed them "
            "there. When the answer repeats pieces of the prompt (editing code, summarising, quoting), those "
            "guesses are often long and right, and they cost nothing to make.\n\n"
            "**Retrieval** is the same idea with a bigger memory: a suffix index over the context plus a shipped "
            "text corpus returns the most frequent continuations of the current ending, as a tree. On open-ended "
            "text nothing matches, the drafter proposes little or nothing, and decoding falls back to about one "
            "token per forward."),
        tab=SPECULATIVE,
        prompt=CODE,
        settings=_spec("prompt_lookup", {"ngram": 3, "draft_len": 8}, max_new_tokens=96),
        look_at="Running strip",
        notice=(
            "The model answers with a short rewrite (27 tokens, then it stops) in **13 steps: τ ≈ 2.1**, with 14 of "
            "39 drafted tokens accepted. The long accepted runs are copied pieces: step 2 "
            "commits *\" moving_average(values, window):\"* and the next line's indent, 9 tokens from one "
            "forward, and step 8 copies *\"i:i + window]\"*; new words such as *\"return sum\"* get no useful "
            "draft. "
            "Drafting is free, so even this modest τ pays: about **1.7× faster than plain decoding** on this "
            "laptop CPU, with the same text. The retrieval method on the same prompt (shipped corpus plus "
            "context) reaches **τ ≈ 2.7** and about 1.6×."),
        question="Why does prompt lookup cost almost nothing even in the steps where all of its drafts are rejected?",
        answer="It runs no model: a draft is a search over tokens already written, and a rejected draft only adds a "
               "few positions to a target forward that had to run anyway.",
        try_change="Replace the **Prompt** with *\"Explain in three sentences why the sky is blue.\"*: nothing in an "
                   "open answer repeats the prompt, 1 of 27 drafts is accepted, τ falls to 1.02 and the speed to "
                   "plain decoding's.",
    ),
    Lesson(
        slug="trained-drafters",
        title="6 · Trained drafters",
        short="Trained drafters",
        goal="Compare a small drafter trained to imitate the target with an untrained early exit that has the same "
             "tree shape.",
        explain=(
            "The early exit of lessons 2 and 4 was never trained to draft: it reuses the target's lower layers and "
            "hopes the output head can read them, so it is both expensive (20–24 layers) and often wrong. An "
            "**EAGLE-style drafter** is one small extra layer trained on the target's own outputs. It reads the "
            "target's internal features (the last hidden state, which already holds most of what the target knows "
            "about the next token) and predicts the next feature, then the next, step by step; the target's output "
            "head turns each into tokens. The shipped one has about 4 million parameters and took under an hour "
            "to train on a CPU.\n\n"
            "Because it starts from the target's features, a tiny drafter can agree with the target far more often "
            "than a much bigger untrained one, at a fraction of the cost."),
        tab=SPECULATIVE,
        prompt=PRIMES,
        settings=_spec("eagle", {"depth": 5, "top_k": 4, "budget": 16, "draft_vocab": 8192}),
        look_at="Acceptance by depth",
        notice=(
            "With a 16-node tree the trained drafter finishes the answer in **14 steps: τ ≈ 3.4**. Its accepted "
            "path reaches depth 1 in 93% of steps and depth 2 in 86%. The run decodes in about 1.3 s on this laptop "
            "CPU, **about 1.5× faster than plain decoding**, with the same text: the first run in this tour that "
            "beats AR with a model as drafter. The untrained early exit (20 layers) in the same 16-node tree "
            "needs 30 steps (τ ≈ 1.6), reaches depth 1 in only 40% of steps, and runs at about 0.3× AR."),
        question="Both drafters verify 16-node trees with the same target, so each verify pass costs the same. Where "
                 "does the early exit lose its time?",
        answer="Twice: each of its draft levels runs 20 of the target's 30 layers, which costs far more than one "
               "small layer, and it is accepted less often, so it needs about twice as many steps (30 against 14).",
        try_change="Set **Method** to **Dynamic tree (EAGLE-2 style)** with **depth 5, top_k 4, budget 16, "
                   "exit_layer 20**: the same tree shape drafted by the untrained early exit, τ ≈ 1.6.",
    ),
    Lesson(
        slug="when-it-pays",
        title="7 · When speculation does not pay",
        short="When it pays",
        goal="Learn to read accepted length against speedup, and see why a bigger tree can be slower on a CPU and "
             "faster on a GPU.",
        explain=(
            "τ counts tokens per target forward, but time is what matters, and a step costs more than a plain "
            "forward: the drafter runs, and the target scores every drafted node, not one token. The speedup is "
            "roughly τ divided by (the verify cost plus the draft cost, in units of one plain forward).\n\n"
            "That verify cost depends on the hardware. A laptop CPU is nearly busy with one token, so scoring 60 "
            "costs several plain forwards. A GPU has thousands of idle arithmetic units at batch size one, so "
            "scoring 60 tokens costs about as much as scoring one: there, big trees are nearly free and every extra "
            "accepted token is pure gain. The cost model measures this machine's curve and predicts the speedup a "
            "run should get from its own steps."),
        tab=SPECULATIVE,
        prompt=PRIMES,
        settings=_spec("eagle", {"depth": 6, "top_k": 8, "budget": 60, "draft_vocab": 8192}),
        look_at="Cost model: does speculation pay on this machine?",
        notice=(
            "This is lesson 6's drafter with a 60-node tree. It accepts more, **τ = 4.0** (12 steps for 48 tokens, "
            "against 14 steps with 16 nodes), yet it is **slower: about 0.6–0.9× AR** on this laptop CPU, against "
            "about 1.2–1.5× for a 16-node tree. The curve says why: on this CPU one token costs about 40 ms to "
            "score, 16 tokens about 57 ms (1.4×), 64 tokens about 144 ms (3.6×). A 61-token verify eats almost all "
            "of the gain of τ = 4. On a GPU the curve is typically close to flat at these sizes, and there this "
            "tree would be the faster one."),
        question="A method reaches τ = 3 but each of its steps costs as much as 4 plain forwards. Is it faster or "
                 "slower than plain decoding, and by how much roughly?",
        answer="Slower: it commits 3 tokens for the price of 4 plain forwards, so it runs at about 3/4 = 0.75× the "
               "speed of plain decoding.",
        try_change="Set **budget** to **16**: τ drops to 3.4 (14 steps) but each verify is cheap, and the run "
                   "becomes faster than plain decoding (about 1.2× on this laptop CPU).",
    ),
    Lesson(
        slug="diffusion",
        title="8 · Diffusion",
        short="Diffusion",
        goal="Watch a diffusion model fill a whole canvas of masked positions in parallel, and see what a confidence "
             "threshold trades.",
        explain=(
            "A masked diffusion model does not write left to right. It starts from a canvas of blank (masked) cells "
            "after the prompt and, at each step, predicts a token for **every** masked cell at once, each with a "
            "confidence. A **schedule** decides which predictions to keep; the rest stay masked and are predicted "
            "again next step with more context. Here the canvas is 32 cells in blocks of 8, filled one block at a "
            "time.\n\n"
            "The **threshold** schedule keeps every cell whose confidence passes the threshold (and at least the "
            "best one). A low threshold reveals many cells per step, so few steps, but cells decided together "
            "cannot see each other and may disagree or repeat. A high one waits for certainty. This shipped model "
            "is a tiny toy: judge how the canvas fills, not the prose."),
        tab=DIFFUSION,
        prompt=BASIL,
        settings=_diffusion("threshold", 0.4),
        look_at="Lattice",
        notice=(
            "With threshold 0.4 the 32 cells take **22 steps: about 1.45 tokens per forward** (under a second on "
            "this laptop CPU). Each lattice row is a step. The first step reveals 4 cells at once (*\"To keep "
            "basil … dying\"*), most later steps only one; in the third block one step reveals 4 cells together, "
            "two of them the same word, *\"ventilation\"*. "
            "At **0.2** the same canvas takes only 10 steps (3.2 per forward) but the text degrades into repeats "
            "(*\"proper proper proper\"*, *\"tray tray\"*); at **0.7** it takes all 32 steps, one cell each."),
        question="Why can two cells revealed in the same step end up repeating the same word?",
        answer="They were predicted in the same forward pass, each without knowing what the other would become; "
               "both can pick the word that fits the context, while cells revealed in later steps see the earlier "
               "ones.",
        try_change="Set **threshold** to **0.2**: 10 steps instead of 22, and more repeated words.",
    ),
    Lesson(
        slug="jacobi",
        title="9 · Jacobi decoding",
        short="Jacobi",
        goal="See an ordinary autoregressive model fill the same kind of lattice by fixed-point iteration, and why "
             "its text stays exactly that of plain decoding.",
        explain=(
            "Jacobi decoding needs no drafter and no training. It keeps guesses for the next 8 positions. Each step, "
            "the model scores the committed text plus all 8 guesses in one forward pass, and its predictions "
            "become the new guesses. A guess is **committed** only once every guess before it matched what the model "
            "predicts there: then the model, reading exactly the committed text, would have written this token "
            "anyway. The first position is always right, since it only reads committed text, so every step "
            "commits at least one token.\n\n"
            "That is why it is lossless: each committed token is the greedy choice given the real text before it. "
            "The catch is that later guesses were built on earlier wrong ones, so a language model rarely "
            "converges more than one position ahead."),
        tab=DIFFUSION,
        prompt=PRIMES,
        settings=_jacobi(8),
        look_at="Lattice",
        notice=(
            "48 tokens take **40 forwards: 1.2 tokens per forward**. In 8 of the 40 steps one more guess had "
            "already converged (mostly the predictable *\", \"* after a number), committing 2 tokens; in the "
            "other 32 only one. The text equals plain "
            "decoding's word for word (*\"… 19, 21, 23, 25, …\"*). Speed on this laptop CPU is about that of plain "
            "decoding (0.9–1.1× AR): each forward scores 9 positions, which costs little more than one here."),
        question="Why is the first guessed position always accepted in Jacobi decoding?",
        answer="It depends only on tokens already committed, so the model's prediction there is exactly the token "
               "plain greedy decoding would write next.",
        try_change="Set **window** to **16**: still 40 forwards for 48 tokens (wider guesses do not converge), and "
                   "each forward costs more, about 0.7× AR.",
    ),
)

_BY_SLUG = {lesson.slug: lesson for lesson in LESSONS}


def lesson_by_slug(slug) -> Lesson | None:
    """The lesson a deep link names (`?lesson=<slug>`), or None for anything else."""
    if not isinstance(slug, str):
        return None
    return _BY_SLUG.get(slug.strip().lower())
