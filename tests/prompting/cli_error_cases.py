"""Every bad input the command line refuses, with the one line it answers (docs/errors.md is made from this).

Each case: an id, the arguments (``{tmp}``: a folder of prepared files, ``{model}``: a saved tiny model),
the exit status, the exact message after ``Error: ``, and what may have happened first: ``"nothing"``
(no model, config or embedder was read), ``"config"`` (a model's config was read, no weights), or
``"model"`` (the model loaded). ``scripts/gen_error_docs.py`` turns the list into docs/errors.md and
``tests/prompting/test_cli_errors.py`` runs every case.
"""

from __future__ import annotations

STRATEGIES = "greedy', 'sample', 'beam', 'contrastive-search', 'contrastive-decoding', 'layer-contrast', 'input-contrast"

CASES: list[tuple[str, list[str], int, str, str]] = [
    # -- strategy options ----------------------------------------------------------------------------
    ("unknown strategy", ["generate", "--strategy", "nucleus", "x"], 2,
     f"Invalid value for '--strategy': 'nucleus' is not one of '{STRATEGIES}'.", "nothing"),
    ("option the strategy does not take", ["generate", "--strategy", "contrastive-search", "--beta", "0.5", "x"], 2,
     "--beta cannot be used with --strategy contrastive-search (it takes --alpha, --top-k)", "nothing"),
    ("sampling option under greedy", ["generate", "--temperature", "0.7", "x"], 2,
     "--temperature cannot be used with --strategy greedy (it takes no options)", "nothing"),
    ("missing amateur", ["generate", "--strategy", "contrastive-decoding", "x"], 2,
     "--strategy contrastive-decoding needs --amateur (the amateur model: a path or name, or a loaded model)", "nothing"),
    ("missing layers", ["generate", "--strategy", "layer-contrast", "x"], 2,
     "--strategy layer-contrast needs --layers (amateur layer index or indices (0 = embeddings), or DoLa's bucket 'low' "
     "or 'high')", "nothing"),
    ("layers not a list", ["generate", "--strategy", "layer-contrast", "--layers", "2,x", "x"], 2,
     "--layers 2,x is not a layer index, a comma-separated list of them (e.g. 4 or 2,4,6), or low / high", "nothing"),
    ("several layers under layer_mode fixed", ["generate", "--strategy", "layer-contrast", "--layers", "0,4,8", "x"], 2,
     "--layers 0,4,8 holds several layers but layer_mode 'fixed' takes one; use layer_mode 'dola', 'jsd' or 'fusion'",
     "nothing"),
    ("DoLa bucket under layer_mode fixed", ["generate", "--strategy", "layer-contrast", "--layers", "low", "x"], 2,
     "--layers low is a bucket of layers (DoLa's) but layer_mode 'fixed' takes one; use layer_mode 'dola', 'jsd' or "
     "'fusion'", "nothing"),
    ("negative layer", ["generate", "--strategy", "layer-contrast", "--layers", "-1", "x"], 2,
     "--layers -1 must hold layer indices >= 0 (0 = the embedding output), or be 'low' or 'high'", "nothing"),
    ("layer past the model's depth", ["generate", "--strategy", "layer-contrast", "--layers", "40", "x"], 2,
     "--layers 40 is out of range: the model has 2 decoder layers, so valid indices are 0..1 (0 = embeddings; 2 would be "
     "the final layer itself)", "config"),
    ("layer past the model's depth under dola",
     ["generate", "--strategy", "layer-contrast", "--layer-mode", "dola", "--layers", "0,3", "x"], 2,
     "--layers 0,3 is out of range: the model has 2 decoder layers, so valid indices are 0..1 (0 = embeddings; 2, the "
     "final layer, is dropped under layer_mode 'dola')", "config"),
    ("alpha out of range (contrastive search)", ["generate", "--strategy", "contrastive-search", "--alpha", "1.5", "x"], 2,
     "--alpha 1.5 must be a number in [0, 1] (0 is greedy decoding)", "nothing"),
    ("alpha below 0 (contrast)", ["generate", "--strategy", "contrastive-decoding", "--amateur", "{model}", "--alpha", "-0.5", "x"], 2,
     "--alpha -0.5 must be in [0, 1] (the plausibility threshold; 0 keeps every token, 1 the expert's argmax only)",
     "nothing"),
    ("unknown preset", ["generate", "--strategy", "contrastive-decoding", "--amateur", "{model}", "--preset", "li2023", "x"], 2,
     "Invalid value for '--preset': 'li2023' is not one of 'li2022-greedy', 'li2022-sample', 'obrien2023'.", "nothing"),
    ("tau 0", ["generate", "--strategy", "contrastive-decoding", "--amateur", "{model}", "--tau", "0", "x"], 2,
     "--tau 0.0 must be > 0 (the amateur's temperature)", "nothing"),
    ("beta below 0", ["generate", "--strategy", "contrastive-decoding", "--amateur", "{model}", "--beta", "-1", "x"], 2,
     "--beta -1.0 must be >= 0 (0 gives the expert alone)", "nothing"),
    ("temperature 0", ["generate", "--strategy", "sample", "--temperature", "0", "x"], 2,
     "--temperature 0.0 must be > 0 (sampling temperature)", "nothing"),
    ("top-p 0", ["generate", "--strategy", "sample", "--top-p", "0", "x"], 2,
     "--top-p 0.0 must be in (0, 1] (nucleus mass)", "nothing"),
    ("top-p above 1", ["generate", "--strategy", "sample", "--top-p", "2", "x"], 2,
     "--top-p 2.0 must be in (0, 1] (nucleus mass)", "nothing"),
    ("num-beams 0", ["generate", "--strategy", "beam", "--num-beams", "0", "x"], 2,
     "--num-beams 0 must be an int >= 1", "nothing"),
    ("top-k 0", ["generate", "--strategy", "contrastive-search", "--top-k", "0", "x"], 2,
     "--top-k 0 must be an integer >= 1 (the number of candidates; 1 is greedy)", "nothing"),
    ("top-k past the vocabulary", ["generate", "--strategy", "contrastive-search", "--top-k", "100000", "x"], 2,
     "--top-k 100000 is larger than the model's vocabulary (49152 tokens)", "config"),
    ("sampling option without --do-sample",
     ["generate", "--strategy", "input-contrast", "--amateur-prompt", "a", "--top-k", "5", "x"], 2,
     "--top-k 5 needs do_sample (it only shapes sampling)", "nothing"),
    # -- prompts -------------------------------------------------------------------------------------
    ("empty prompt argument", ["generate", ""], 2, "prompt 1 is empty: every prompt needs some text", "nothing"),
    ("blank prompt argument", ["generate", "ok", "   "], 2, "prompt 2 is empty: every prompt needs some text", "nothing"),
    ("empty prompt in the input file", ["generate", "-i", "{tmp}/empty_prompt.jsonl"], 2,
     "--input {tmp}/empty_prompt.jsonl line 2: the prompt ('prompt') is empty", "nothing"),
    ("input file without the prompt field", ["generate", "-i", "{tmp}/noprompt.jsonl"], 2,
     "--prompt-key prompt is not a string field of input file '{tmp}/noprompt.jsonl', line 1; it has keys ['text']",
     "nothing"),
    ("prompts and --input together", ["generate", "-i", "{tmp}/bad.jsonl", "x"], 2,
     "--input {tmp}/bad.jsonl cannot be used with prompts given as arguments; give one or the other", "nothing"),
    ("missing input file", ["generate", "-i", "{tmp}/missing.jsonl"], 1,
     "input file '{tmp}/missing.jsonl' does not exist", "nothing"),
    ("input file that is not JSONL", ["generate", "-i", "{tmp}/bad.jsonl"], 1,
     "input file '{tmp}/bad.jsonl', line 2: not valid JSON (Expecting value)", "nothing"),
    ("amateur prompt under greedy", ["generate", "--amateur-prompt", "s", "x"], 2,
     "--amateur-prompt s applies to strategy 'input-contrast' only", "nothing"),
    ("input contrast without amateur prompts", ["generate", "--strategy", "input-contrast", "x"], 2,
     "--amateur-prompt is needed by input contrast: give it, or an 'amateur_prompt' field in every row (row 1 has none)",
     "nothing"),
    ("system prompt without chat", ["generate", "--system-prompt", "s", "x"], 2,
     "--system-prompt needs --chat", "nothing"),
    ("prompt longer than the context", ["generate", "--max-new-tokens", "4", "{long}"], 2,
     "prompt 1 is too long: 300 prompt tokens + max_new_tokens 4 exceed the model's context of 256 tokens; shorten it, "
     "lower max_new_tokens, or ask for truncation (truncate=True, on the command line --truncate)", "model"),
    # -- models --------------------------------------------------------------------------------------
    ("mistyped model name", ["generate", "--model", "expertt", "x"], 2,
     "--model expertt is not a local file or folder (no such path), and not a Hub id (org/name); Hub ids need network "
     "access, and HF_HUB_OFFLINE is set", "nothing"),
    ("folder that is not a model", ["generate", "--model", "{tmp}/empty_dir", "x"], 2,
     "--model {tmp}/empty_dir is a folder but not a model: it holds no config.json and no .gguf file (expected a folder "
     "written by save_pretrained, or a folder with one .gguf file)", "nothing"),
    ("a file that is not GGUF as the model", ["generate", "--model", "{tmp}/bad.jsonl", "x"], 2,
     "--model {tmp}/bad.jsonl is a file but not a GGUF file (it does not start with the GGUF magic bytes); expected a "
     "model folder (with config.json), a .gguf file, or a Hugging Face Hub id (org/name)", "nothing"),
    ("missing amateur folder", ["generate", "--strategy", "contrastive-decoding", "--amateur", "./no-such-amateur", "x"], 2,
     "--amateur ./no-such-amateur is not an existing file or folder (no such path)", "config"),
    # -- output files --------------------------------------------------------------------------------
    ("resume without output", ["generate", "--resume", "x"], 2, "--resume needs --output FILE", "nothing"),
    ("resume and overwrite", ["generate", "-o", "{tmp}/o.jsonl", "--resume", "--overwrite", "x"], 2,
     "--resume and --overwrite cannot be used together", "nothing"),
    ("existing output", ["generate", "-o", "{tmp}/existing.jsonl", "x"], 1,
     "output file '{tmp}/existing.jsonl' already exists; pass --overwrite to replace it or --resume to continue it",
     "nothing"),
    ("resume of an output without a run record", ["generate", "-o", "{tmp}/existing.jsonl", "--resume", "x"], 1,
     "cannot resume '{tmp}/existing.jsonl': it has no run record (existing.jsonl.run.json), so nothing shows that its "
     "rows come from this input and these options (outputs written before counterpoint kept records have none); pass "
     "--overwrite to start it again", "nothing"),
    ("output is a folder", ["generate", "-o", "{tmp}/empty_dir", "x"], 2,
     "Invalid value for '-o' / '--output': File '{tmp}/empty_dir' is a directory.", "nothing"),
    # -- run and select ------------------------------------------------------------------------------
    ("missing queries file", ["run", "{tmp}/missing.jsonl"], 1, "queries file '{tmp}/missing.jsonl' does not exist",
     "nothing"),
    ("missing pool file", ["run", "{tmp}/q.jsonl", "--pool", "{tmp}/nopool.jsonl"], 1,
     "pool file '{tmp}/nopool.jsonl' does not exist", "nothing"),
    ("unknown selection method", ["run", "{tmp}/q.jsonl", "--method", "nearest"], 2,
     "Invalid value for '--method': 'nearest' is not one of 'knn', 'mmr', 'dpp', 'bm25', 'random', 'vote-k'.", "nothing"),
    ("balance labels without a label key", ["run", "{tmp}/q.jsonl", "--balance-labels"], 2,
     "--balance-labels needs --label-key", "nothing"),
    ("demo format without a field", ["run", "{tmp}/q.jsonl", "--demo-format", "plain"], 2,
     "--demo-format plain must be a str.format string with at least one {field}, e.g. 'Input: {input}'", "nothing"),
    ("noisy instruction without its variant", ["run", "{tmp}/q.jsonl", "--noisy-instruction", "n"], 2,
     "--noisy-instruction needs --variant noisy-instruction", "nothing"),
    ("variant under greedy", ["run", "{tmp}/q.jsonl", "--variant", "no-demos"], 2,
     "--variant cannot be used with --strategy greedy (it takes no options)", "nothing"),
    ("k larger than the pool", ["select", "{tmp}/pool.jsonl", "{tmp}/q.jsonl", "-k", "7"], 2,
     "-k 7 is larger than the pool (6 examples); lower k or add examples", "nothing"),
    ("another method's option", ["select", "{tmp}/pool.jsonl", "{tmp}/q.jsonl", "--fetch-k", "5"], 2,
     "--fetch-k cannot be used with --method knn (it takes no options)", "nothing"),
    ("a method option out of range", ["select", "{tmp}/pool.jsonl", "{tmp}/q.jsonl", "--method", "mmr", "--lambda-mult", "1.5"],
     2, "--lambda-mult 1.5 must be in [0, 1]", "nothing"),
    ("fetch-k below k", ["select", "{tmp}/pool.jsonl", "{tmp}/q.jsonl", "--method", "mmr", "-k", "2", "--fetch-k", "1"], 2,
     "--fetch-k 1 must be at least k=2", "nothing"),
    ("select: missing pool file", ["select", "{tmp}/nopool.jsonl", "{tmp}/q.jsonl"], 1,
     "pool file '{tmp}/nopool.jsonl' does not exist", "nothing"),
    ("select: queries that are not JSONL", ["select", "{tmp}/pool.jsonl", "{tmp}/bad.jsonl"], 1,
     "queries file '{tmp}/bad.jsonl', line 2: not valid JSON (Expecting value)", "nothing"),
    ("select: missing embedder folder", ["select", "{tmp}/pool.jsonl", "{tmp}/q.jsonl", "--embedder", "./no-such-folder"], 2,
     "--embedder ./no-such-folder is not an existing file or folder (no such path)", "nothing"),
]  # fmt: skip
