"""What a decoding strategy declares about itself: its options, their defaults and checks, and how it runs.

Every method module (``contrastive_search.py``, ``layer_contrast.py``, ...) exports a
:class:`StrategySpec`; :mod:`counterpoint.decoding.registry` collects them. The command line builds its
``--strategy`` choices, flags, defaults and help from the specs, the pipeline and the backends build
their calls from them, and each option is checked in one place: its :class:`Option` in the spec of the
strategy that takes it.

Example:
    >>> from counterpoint.decoding.registry import get_strategy
    >>> spec = get_strategy("contrastive-search")
    >>> spec.resolve(GenerationOptions(alpha=0))        # 0 is a value, not "unset"
    {'alpha': 0, 'top_k': 4}
    >>> spec.resolve(GenerationOptions(alpha=1.5))
    Traceback (most recent call last):
    ...
    counterpoint.errors.OptionError: alpha=1.5 must be a number in [0, 1] (0 is greedy decoding)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from counterpoint.errors import OptionError

__all__ = [
    "GenerationOptions",
    "MissingOptionError",
    "Option",
    "StrategySpec",
    "UnknownOptionError",
]


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


# What a value of each option type must be, checked before any strategy-specific range.
_TYPES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "float": (_is_number, "must be a number"),
    "int": (_is_int, "must be an integer"),
    "bool": (lambda v: isinstance(v, bool), "must be True or False"),
    "str": (lambda v: isinstance(v, str), "must be a string"),
    "layers": (
        lambda v: _is_int(v) or (isinstance(v, tuple) and bool(v) and all(_is_int(i) for i in v)),
        "must be a layer index or a non-empty tuple of them",
    ),
    "model": (lambda v: v is not None, "must be a model or a model name"),
    "any": (lambda v: True, ""),
}


@dataclass(frozen=True)
class Option:
    """One option as one strategy takes it.

    Attributes:
        name: the option's name (a :class:`GenerationOptions` key; the CLI flag is ``--`` + name with
            ``-`` for ``_``).
        type: ``"float"``, ``"int"``, ``"bool"``, ``"str"``, ``"layers"`` (an index or a tuple of them),
            ``"model"`` (a loaded model or a name the backend loads) or ``"any"``. Options of one name share
            their type across strategies.
        help: what it means for this strategy, one short phrase (the CLI joins the strategies' phrases).
        default: the value used when the option is not given; ``None``: no default (off).
        required: the strategy cannot run without it.
        choices: the valid values, when they are few.
        check: a predicate on a value of the right type; ``valid`` says in words what passes it.
    """

    name: str
    type: str
    help: str
    default: Any = None
    required: bool = False
    choices: tuple[Any, ...] | None = None
    check: Callable[[Any], bool] | None = None
    valid: str = ""

    def __post_init__(self) -> None:
        if self.type not in _TYPES:
            raise ValueError(f"Option {self.name!r}: type={self.type!r} is not one of {list(_TYPES)}")

    def validate(self, value: Any, *, argument: str | None = None) -> Any:
        """``value`` if it is valid for this option, else an :class:`OptionError` naming the option
        (or ``argument``, where an API function spells it differently)."""
        name = argument or self.name
        ok, words = _TYPES[self.type]
        if not ok(value):
            raise OptionError(name, value, self.valid or words)
        if self.choices is not None and value not in self.choices:
            raise OptionError(name, value, f"is not one of: {', '.join(map(str, self.choices))}")
        if self.check is not None and not self.check(value):
            raise OptionError(name, value, self.valid or "is not valid")
        return value


class UnknownOptionError(OptionError):
    """An option name no strategy takes, or one the chosen strategy does not take.

    ``strategy`` and ``takes`` (the options it does take) are set in the second case.
    """

    def __init__(
        self,
        argument: str,
        value: Any,
        problem: str,
        *,
        strategy: str | None = None,
        takes: tuple[str, ...] = (),
    ) -> None:
        self.strategy = strategy
        self.takes = takes
        super().__init__(argument, value, problem)


class MissingOptionError(OptionError):
    """A strategy's required option was not given."""

    def __init__(self, strategy: str, option: Option) -> None:
        self.strategy = strategy
        super().__init__(option.name, None, option.help)

    def render(self, flag: str | None = None) -> str:
        if flag is None:
            return f"strategy {self.strategy!r} needs {self.argument}= ({self.problem})"
        return f"--strategy {self.strategy} needs {flag} ({self.problem})"


class GenerationOptions(Mapping[str, Any]):
    """The options given for a strategy, by name; an option not given (or ``None``) takes its default.

    A read-only mapping with attribute access (``options.alpha``: ``None`` when not given). Which names
    exist, and what each means, is what the strategies declare (see :mod:`counterpoint.decoding.registry`
    and ``counterpoint --help``): ``alpha``, ``top_k``, ``beta``, ``form``, ``gamma``, ``tau``,
    ``temperature``, ``top_p``, ``num_beams``, ``do_sample``, ``amateur``, ``layers``, ``layer_mode``,
    ``variant``, and those of any strategy added later. Values are checked against the chosen strategy
    when it runs (:meth:`StrategySpec.resolve`), so ``0`` is a value like any other.

    Example:
        >>> o = GenerationOptions(alpha=0.6, top_k=None)
        >>> o.alpha, o.top_k, dict(o)
        (0.6, None, {'alpha': 0.6})
    """

    def __init__(self, **options: Any) -> None:
        from counterpoint.decoding.registry import option_names

        known = option_names()
        unknown = sorted(set(options) - known)
        if unknown:
            raise UnknownOptionError(
                unknown[0],
                options[unknown[0]],
                f"is not an option of any strategy; options are: {', '.join(sorted(known))}",
            )
        object.__setattr__(self, "_given", {k: v for k, v in options.items() if v is not None})

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        from counterpoint.decoding.registry import option_names

        if name not in option_names():
            raise AttributeError(f"GenerationOptions has no option {name!r}")
        return self._given.get(name)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("GenerationOptions is read-only; use replace(...)")

    def __getitem__(self, name: str) -> Any:
        return self._given[name]

    def __iter__(self):
        return iter(self._given)

    def __len__(self) -> int:
        return len(self._given)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, GenerationOptions) and self._given == other._given

    def __hash__(self) -> int:
        return hash(tuple(sorted((k, repr(v)) for k, v in self._given.items())))

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v!r}" for k, v in self._given.items())
        return f"GenerationOptions({inner})"

    def given(self) -> dict[str, Any]:
        """The options that were set (not ``None``)."""
        return dict(self._given)

    def replace(self, **changes: Any) -> GenerationOptions:
        """A copy with ``changes`` applied (``None`` removes an option)."""
        return GenerationOptions(**{**self._given, **changes})


@dataclass(frozen=True)
class StrategySpec:
    """A named decoding strategy: its options and how each backend runs it.

    Attributes:
        name: the one name users type (``"contrastive-search"``); ``aliases`` are older spellings that
            still resolve, with a ``DeprecationWarning``.
        summary: one line for ``--help``.
        options: what it takes (see :class:`Option`).
        build: resolved option values -> ``model.generate`` keyword arguments (transformers backend).
        build_vllm: resolved option values -> vLLM request settings (see ``counterpoint.decoding.vllm``);
            ``None`` when vLLM cannot run the strategy, with the reason in ``no_vllm``.
        amateur_prompt: the caller supplies one amateur prompt per row (input contrast).
        check: cross-option checks on resolved values (raise :class:`OptionError`).
        check_model: checks of resolved values against the model (:class:`counterpoint.models.ModelFacts`,
            read from its config before the weights load): layer indices past its depth, ``top_k`` past its
            vocabulary.
        streams: whether a transformers streamer can follow it (not beam search).
        aliases: older spellings of the name that still resolve, with a DeprecationWarning.
        position: where the strategy comes in listings (``--strategy`` choices, help, errors); equal
            positions list by name.
        presets: named sets of option values (a paper's settings). When the strategy declares them it
            also declares a ``preset`` option choosing one; a chosen preset's values stand in for the
            defaults, and options given explicitly override them.
    """

    name: str
    summary: str
    options: tuple[Option, ...]
    build: Callable[[dict[str, Any]], dict[str, Any]]
    build_vllm: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    no_vllm: str = ""
    amateur_prompt: bool = False
    check: Callable[[dict[str, Any]], None] | None = None
    check_model: Callable[[dict[str, Any], Any], None] | None = None
    streams: Callable[[dict[str, Any]], bool] = field(default=lambda values: True)
    aliases: tuple[str, ...] = ()
    position: int = 100
    presets: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        names = [o.name for o in self.options]
        if len(set(names)) != len(names):
            raise ValueError(f"strategy {self.name!r} declares an option twice: {names}")
        if self.presets:
            chooser = self.option("preset")
            if chooser is None or set(chooser.choices or ()) != set(self.presets):
                raise ValueError(
                    f"strategy {self.name!r} has presets but no 'preset' option choosing among them"
                )
            for preset, values in self.presets.items():
                for name, value in values.items():
                    option = self.option(name)
                    if option is None or name == "preset":
                        raise ValueError(
                            f"preset {preset!r} of strategy {self.name!r} sets unknown option {name!r}"
                        )
                    option.validate(value)
        if self.build_vllm is None and not self.no_vllm:
            raise ValueError(f"strategy {self.name!r} has no vLLM builder and no no_vllm reason")

    def option(self, name: str) -> Option | None:
        return next((o for o in self.options if o.name == name), None)

    def resolve(self, options: GenerationOptions | Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Every option of this strategy with its value: the given one (checked), else the chosen preset's,
        else the default.

        Raises:
            UnknownOptionError: an option this strategy does not take (the message lists what it takes).
            OptionError: a bad value, or a required option missing.
        """
        given = dict(options or {})
        given = {k: v for k, v in given.items() if v is not None}
        extra = [k for k in given if self.option(k) is None]
        if extra:
            names = tuple(o.name for o in self.options)
            raise UnknownOptionError(
                extra[0], given[extra[0]],
                f"does not apply to strategy {self.name!r}; it takes: {', '.join(names) or 'no options'}",
                strategy=self.name, takes=names,
            )  # fmt: skip
        preset: Mapping[str, Any] = {}
        if "preset" in given and self.presets:
            preset = self.presets[self.option("preset").validate(given["preset"])]
        values: dict[str, Any] = {}
        for opt in self.options:
            if opt.name in given:
                values[opt.name] = opt.validate(given[opt.name])
            elif opt.name in preset:
                values[opt.name] = preset[opt.name]
            elif opt.required:
                raise MissingOptionError(self.name, opt)
            else:
                values[opt.name] = opt.default
        if self.check is not None:
            self.check(values)
        return values

    def generate_kwargs(self, options: GenerationOptions | Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The ``model.generate`` keyword arguments for ``options`` (checked)."""
        return self.build(self.resolve(options))
