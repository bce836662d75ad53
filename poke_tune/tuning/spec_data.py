"""The spec's dataset section: a trajectory file or manifest, or the recipes that build one
(`generate`, with its league; `import` of logged battles, with its `record` of bot battles),
each keyed by what it makes, so a built dataset is found again in the cache."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from poke_tune.data.generate import policy_file_digests
from poke_tune.data.league import League
from poke_tune.sim.battle_records import check_battle_format
from poke_tune.sim.encoding import ENCODER_VERSION
from poke_tune.tuning.spec_base import Strict

__all__ = ["DatasetSpec", "GenerateRecipe", "ImportRecipe", "LeagueRecipe", "RecordRecipe"]


class LeagueRecipe(Strict):
    """Who plays each battle, drawn per battle (`data.generate.League`): the first
    `learners` policies are the learners (a champion at its temperatures), the rest the
    pool; a battle is a learner against the pool with probability `learner_share`, else
    two of the pool, each drawn by `weights`."""

    learners: int = Field(ge=1)
    learner_share: float = Field(ge=0.0, le=1.0)
    weights: list[Annotated[float, Field(gt=0)]] | None = None
    """One per policy, in `policies` order; null: equal."""


class GenerateRecipe(Strict):
    """A dataset made by `poke-tune data generate`, once, cached by this recipe's hash."""

    battles: int = Field(gt=0)
    policies: list[str] = Field(default=["random", "max-damage"], min_length=1)
    seed: int = 0
    battle_format: str = "gen9randombattle"
    max_turns: int = Field(default=200, gt=0)
    hp_shaping: float = Field(default=0.0, ge=0)
    """Reward shaping: this weight times the per-step change in HP balance (0 = win/loss)."""
    league: LeagueRecipe | None = None
    """Draw each battle's players (a league); null: every ordered pair of `policies` in
    turn."""

    @field_validator("battle_format")
    @classmethod
    def _generated_teams(cls, battle_format: str) -> str:
        check_battle_format(battle_format)
        return battle_format

    @model_validator(mode="after")
    def _league_fits(self) -> GenerateRecipe:
        if self.league is not None:
            self.to_league()  # raises ValueError naming what does not fit
        return self

    def to_league(self) -> League | None:
        """The data layer's league of this recipe (None: all pairs in turn)."""
        if self.league is None:
            return None
        weights = tuple(self.league.weights) if self.league.weights is not None else None
        return League(
            learners=self.league.learners,
            learner_share=self.league.learner_share,
            weights=weights,
            policies=len(self.policies),
        )

    def key(self, registry: str | None = None) -> str:
        """The generated file's cache key: the recipe, the encoder that records it (a file
        written by another encoder version is another dataset), the content of every
        checkpoint among the policies (a checkpoint overwritten is another policy) and,
        with a `models:/` policy, the `registry` (MLflow tracking URI) it is read from:
        `models:/x/1` of another store is another policy. Pin the names first
        (`spec_file.load_spec` does): an alias in the key would not move when the model it
        points to does."""
        # Without a league the key is what it was before leagues existed.
        dumped = self.model_dump(exclude={"league"} if self.league is None else set())
        values = {**dumped, "encoder_version": ENCODER_VERSION}
        digests = policy_file_digests(self.policies)
        if digests:  # only then: the keys of built-in recipes stay as they were
            values["policy_files"] = digests
        if registry and any(name.startswith("models:/") for name in self.policies):
            values["registry"] = registry
        return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:16]


class RecordRecipe(Strict):
    """Battles between poke-env bots on a local Showdown server, kept in the server's logs
    and then imported (`poke-tune data record`): a logged dataset a fresh clone can rebuild.
    Server battles are not seeded, so a rebuild holds other battles of the same recipe."""

    battles: int = Field(gt=0)
    matchups: list[Annotated[tuple[str, str], Field(strict=False)]] = Field(
        default=[
            ("poke-env:simple-heuristics", "poke-env:max-base-power"),
            ("poke-env:simple-heuristics", "poke-env:random"),
        ],
        min_length=1,
    )
    """(player, opponent) pairs sharing the battles: poke-env bots or poke-tune policies."""
    battle_format: str = "gen9randombattle"

    def key(self) -> str:
        """The logs folder's cache key."""
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()[:16]


class ImportRecipe(Strict):
    """Logged battles (`poke-tune data import`): server logs and replays, re-simulated and
    verified, imported once and cached by their content and these settings."""

    paths: list[Annotated[Path, Field(strict=False)]] = Field(default_factory=list)
    """Server log files (`*.log.json`), folders of them, replay JSON or JSONL files."""
    record: RecordRecipe | None = None
    """Play these bot battles first and import their logs too."""
    battle_format: str | None = None
    """Battles of other formats are refused (default: the record recipe's, else the first
    battle's)."""
    min_rating: float | None = None
    sides: Literal["both", "winner", "p1", "p2"] = "both"
    hp_shaping: float = Field(default=0.0, ge=0)

    @property
    def format(self) -> str | None:
        if self.battle_format is None and self.record is not None:
            return self.record.battle_format
        return self.battle_format

    @model_validator(mode="after")
    def _some_source(self) -> ImportRecipe:
        if not self.paths and self.record is None:
            raise ValueError("an import needs `paths`, a `record` recipe, or both")
        return self

    def key(self, sources_digest: str) -> str:
        """The imported file's cache key: the sources' content, these settings and the
        encoder that records it."""
        values = {
            **self.model_dump(mode="json", exclude={"paths"}),
            "sources": sources_digest,
            "encoder_version": ENCODER_VERSION,
        }
        return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:16]


class DatasetSpec(Strict):
    """A trajectory file (`path`), or sources to build one from, once, cached: a `generate`
    recipe, an `import` of logged battles, or both (one dataset holding the two)."""

    model_config = ConfigDict(serialize_by_alias=True, validate_by_name=False)

    path: Path | None = Field(default=None, strict=False)
    generate: GenerateRecipe | None = None
    import_: ImportRecipe | None = Field(default=None, alias="import")

    @model_validator(mode="after")
    def _one_source(self) -> DatasetSpec:
        built = self.generate is not None or self.import_ is not None
        if (self.path is None) == (not built):
            raise ValueError(
                "give exactly one of `path` or the sources to build it from (`generate`, "
                "`import`, or both)"
            )
        return self
