"""Rating snapshots, online Elo state, the vote records the ratings are computed from, imported battles."""
from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone

from arena.models import Winner


class SnapshotStatus(models.TextChoices):
    READY = "ready", "Ready"
    FAILED = "failed", "Failed"


class RatingSnapshot(models.Model):
    """The leaderboard of one category as it stood at one refresh. Never edited after it is written.

    A ready snapshot is written with all its rows in one transaction; a refresh that fails leaves a
    failed snapshot without rows (so the failure shows in the admin) and the previous one stays current.
    """

    category = models.CharField(max_length=64)
    style_control = models.BooleanField(default=False)
    created_at = models.DateTimeField(default=timezone.now)
    status = models.CharField(max_length=16, choices=SnapshotStatus.choices, default=SnapshotStatus.READY)
    error = models.TextField(blank=True, default="")
    battles = models.PositiveIntegerField(default=0, help_text="Battles counted in the fit (after the tie policy).")
    votes_read = models.PositiveIntegerField(default=0, help_text="Votes that passed the filters.")
    # Engine parameters (seed included), the filters applied and how many votes each removed.
    params = models.JSONField(default=dict, blank=True)
    solver = models.JSONField(default=dict, blank=True)
    # {"names": [...], "battle_counts": [[...]], "win_fraction": [[...]], "predicted_win": [[...]]},
    # rows and columns in ``names`` order (the rating order); null where two models never met.
    matrices = models.JSONField(default=dict, blank=True)
    # Style-control snapshots: coefficients, their intervals, feature means and deviations.
    style = models.JSONField(default=dict, blank=True)
    # Digest of the aggregated input and parameters: a refresh with nothing new writes nothing.
    input_digest = models.CharField(max_length=64, blank=True, default="")
    seconds = models.FloatField(default=0.0, help_text="Time to aggregate, fit and bootstrap.")

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["category", "style_control", "status", "-created_at"], name="snapshot_latest_idx"),
        ]

    def __str__(self) -> str:
        style = " (style control)" if self.style_control else ""
        return f"{self.category}{style} at {self.created_at:%Y-%m-%d %H:%M:%S}"


class SnapshotRow(models.Model):
    snapshot = models.ForeignKey(RatingSnapshot, on_delete=models.CASCADE, related_name="rows")
    position = models.PositiveIntegerField(help_text="1 = highest rating.")
    # The name as rated: imported battles may name models that are not contenders here, and a
    # renamed contender keeps its old name in old snapshots.
    model_name = models.CharField(max_length=200)
    contender = models.ForeignKey(
        "arena.ArenaModel", null=True, blank=True, on_delete=models.SET_NULL, related_name="snapshot_rows"
    )
    rating = models.FloatField()
    ci_lower = models.FloatField(null=True, blank=True)
    ci_upper = models.FloatField(null=True, blank=True)
    rank_ub = models.PositiveIntegerField()
    votes = models.PositiveIntegerField()
    win_rate = models.FloatField(null=True, blank=True)
    predicted_win_rate = models.FloatField(null=True, blank=True)
    elo = models.FloatField(null=True, blank=True)
    provisional = models.BooleanField(default=False)
    # Medians over the contender's recent finished answers at refresh time: a permalink shows the
    # speed of its day, and pages need not scan every generation on each view.
    median_ttft_ms = models.FloatField(null=True, blank=True)
    median_tpot_ms = models.FloatField(null=True, blank=True)

    class Meta:
        ordering = ["snapshot", "position"]
        constraints = [
            models.UniqueConstraint(fields=["snapshot", "model_name"], name="unique_model_per_snapshot"),
        ]
        indexes = [models.Index(fields=["model_name"], name="snapshotrow_model_idx")]

    def __str__(self) -> str:
        return f"{self.model_name}: {self.rating:.1f}"


class EloRating(models.Model):
    """Online Elo of one model in one category, updated as each vote arrives."""

    category = models.CharField(max_length=64)
    model_name = models.CharField(max_length=200)
    contender = models.ForeignKey(
        "arena.ArenaModel", null=True, blank=True, on_delete=models.SET_NULL, related_name="elo_ratings"
    )
    rating = models.FloatField()
    votes = models.PositiveIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["category", "-rating"]
        constraints = [
            models.UniqueConstraint(fields=["category", "model_name"], name="unique_elo_per_category_model"),
        ]

    def __str__(self) -> str:
        return f"{self.category} {self.model_name}: {self.rating:.1f}"


class VoteRecord(models.Model):
    """One vote as the leaderboard reads it, written once when the vote is first seen.

    It copies what never changes after a vote (the pair, the outcome, the rater, the time, whether
    the battle was anonymous, whether an answer failed) and adds what needs Python to work out
    (language, coding, prompt length and digest, Markdown counts of the answers). The refresh then
    aggregates one table instead of joining votes, battles and generations; only the identity-leak
    flag, which may be set after the vote, is read live from the battle (on PostgreSQL a trigger
    queues the battle when it changes, see ``TallyQueue``).
    """

    battle = models.OneToOneField(
        "arena.Battle", on_delete=models.CASCADE, primary_key=True, related_name="leaderboard_record"
    )
    vote = models.OneToOneField("arena.Vote", on_delete=models.CASCADE, related_name="leaderboard_record")
    rater = models.ForeignKey("auth.User", on_delete=models.CASCADE, related_name="+", db_index=False)
    model_a = models.ForeignKey("arena.ArenaModel", on_delete=models.CASCADE, related_name="+", db_index=False)
    model_b = models.ForeignKey("arena.ArenaModel", on_delete=models.CASCADE, related_name="+", db_index=False)
    winner = models.CharField(max_length=16, choices=Winner.choices)
    voted_at = models.DateTimeField()
    anonymous = models.BooleanField()
    failed = models.BooleanField(default=False, help_text="An answer of the battle failed.")
    language = models.CharField(max_length=16, blank=True, default="", help_text="ISO code; empty if unknown.")
    is_coding = models.BooleanField(default=False)
    prompt_chars = models.PositiveIntegerField(default=0, help_text="Characters over all of the rater's prompts.")
    turns = models.PositiveIntegerField(default=1)
    prompt_hash = models.CharField(max_length=64, blank=True, default="")
    # Style counts per side, summed over turns: [length, headers, list items, bold] (engine order).
    style_a = models.JSONField(null=True, blank=True)
    style_b = models.JSONField(null=True, blank=True)
    # Set in the same transaction as the Elo update, so a repeated hook call counts the vote once.
    elo_applied = models.BooleanField(default=False)
    recorded_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [
            models.Index(fields=["rater", "voted_at"], name="voterecord_rater_day_idx"),
            models.Index(fields=["prompt_hash"], name="voterecord_prompt_idx"),
            models.Index(fields=["elo_applied"], condition=models.Q(elo_applied=False),
                         name="voterecord_elo_pending_idx"),
        ]

    def __str__(self) -> str:
        return f"vote on battle {self.battle_id}"


class InputVersion(models.Model):
    """One row: a counter that database triggers (PostgreSQL) move whenever something ratings read
    changes: a vote record added, changed or removed, a battle's identity-leak flag, an imported
    battle, a contender's name. A refresh that finds it where its last run left it has nothing to
    rate (see ``RefreshMark``)."""

    version = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return f"input version {self.version}"


class RefreshMark(models.Model):
    """Where one kind of refresh (its categories, variants and settings, hashed into ``scope``) last
    finished without a failure: the input version it read and the newest snapshot id after it."""

    scope = models.CharField(max_length=64, unique=True)
    version = models.BigIntegerField()
    last_snapshot_id = models.BigIntegerField(default=0)
    unchanged = models.JSONField(default=list, blank=True)  # what the report lists as unchanged
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"refresh {self.scope[:12]} at version {self.version}"


class VoteStatus(models.Model):
    """Whether each vote record counts (0) or the first filter that removed it, as the tallies hold
    it. Kept by the refresh only (PostgreSQL); rebuilt whole when a filter setting changes or a
    record is changed or removed."""

    battle_id = models.BigIntegerField(primary_key=True)
    status = models.PositiveSmallIntegerField()

    def __str__(self) -> str:
        return f"battle {self.battle_id}: {self.status}"


class TallyQueue(models.Model):
    """Battles whose vote records need their status looked at again: a trigger adds one when a
    record is written or the battle's identity-leak flag changes; the refresh takes them."""

    battle_id = models.BigIntegerField()

    def __str__(self) -> str:
        return f"battle {self.battle_id}"


class VoteTally(models.Model):
    """Counted votes per category and ordered pair of contenders, one count per outcome."""

    category = models.CharField(max_length=64)
    model_a_id = models.BigIntegerField()
    model_b_id = models.BigIntegerField()
    wins_a = models.IntegerField(default=0)
    wins_b = models.IntegerField(default=0)
    ties = models.IntegerField(default=0)
    bothbad = models.IntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["category", "model_a_id", "model_b_id"], name="unique_tally_cell"),
        ]

    def __str__(self) -> str:
        return f"{self.category} {self.model_a_id}-{self.model_b_id}"


class TallyState(models.Model):
    """One row: the filter settings the tallies were built with (empty: never built), whether a
    trigger marked them stale, and how many records each status holds."""

    config = models.JSONField(default=dict, blank=True)
    stale = models.BooleanField(default=True)
    status_counts = models.JSONField(default=dict, blank=True)
    built_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"tallies built {self.built_at} (stale {self.stale})"


class ImportedBattle(models.Model):
    """A vote from a battle file (FastChat ``clean_battle`` and friends), rated with the arena's own.

    Kept apart from Battle so that no rater, contender or generation is invented for it; models are
    matched to contenders by display name.
    """

    # sha256 of the question_id when the row has one, else of the row's content and line number:
    # importing the same file twice adds nothing.
    import_key = models.CharField(max_length=64, unique=True)
    source = models.CharField(max_length=255, blank=True, default="")
    line = models.PositiveIntegerField(default=0)
    question_id = models.CharField(max_length=100, blank=True, default="")
    model_a = models.CharField(max_length=200)
    model_b = models.CharField(max_length=200)
    winner = models.CharField(max_length=16, choices=Winner.choices)
    tstamp = models.DateTimeField(null=True, blank=True)
    anony = models.BooleanField(default=True)
    judge = models.CharField(max_length=200, blank=True, default="")
    language = models.CharField(max_length=16, blank=True, default="")
    is_coding = models.BooleanField(default=False)
    prompt_chars = models.PositiveIntegerField(null=True, blank=True, help_text="Unknown without a conversation.")
    turns = models.PositiveIntegerField(default=1)
    prompt_hash = models.CharField(max_length=64, blank=True, default="")
    style_a = models.JSONField(null=True, blank=True)
    style_b = models.JSONField(null=True, blank=True)
    conversation_a = models.JSONField(null=True, blank=True)
    conversation_b = models.JSONField(null=True, blank=True)
    imported_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["tstamp", "id"]
        constraints = [
            models.CheckConstraint(condition=~models.Q(model_a=models.F("model_b")), name="imported_two_models"),
        ]

    def __str__(self) -> str:
        return f"{self.model_a} vs {self.model_b}: {self.winner}"


# --------------------------------------------------------------------------------------------------
# lm-evaluation-harness results


class HarnessFile(models.Model):
    """One imported lm-evaluation-harness results file, attached to one contender.

    The file is identified by the sha256 of its exact bytes: importing it again changes nothing.
    """

    sha256 = models.CharField(max_length=64, unique=True)
    file_name = models.CharField(max_length=255, help_text="The name the file was imported under.")
    size_bytes = models.PositiveIntegerField(default=0)
    harness_version = models.CharField(max_length=32, help_text='"0.4.13", or "0.4.x" / "0.3.x" when the file '
                                                                "does not say.")
    file_format = models.CharField(max_length=8, help_text='"0.3" or "0.4".')
    harness_model_name = models.CharField(max_length=512, blank=True, default="",
                                          help_text="The model name the file gives (empty if it gives none).")
    model_source = models.CharField(max_length=100, blank=True, default="",
                                    help_text="config.model: hf, vllm, local-completions, dummy, ...")
    # config.model_args with anything that looks like a credential masked.
    model_args = models.JSONField(default=dict, blank=True)
    contender = models.ForeignKey("arena.ArenaModel", on_delete=models.PROTECT, related_name="harness_files")
    evaluated_at = models.DateTimeField(null=True, blank=True)
    limit = models.FloatField(null=True, blank=True, help_text="config.limit (--limit) of the run, if any.")
    warnings = models.JSONField(default=list, blank=True)
    imported_at = models.DateTimeField(default=timezone.now)
    imported_by = models.ForeignKey("auth.User", null=True, blank=True, on_delete=models.SET_NULL,
                                    related_name="+")

    class Meta:
        ordering = ["-imported_at", "-id"]
        indexes = [models.Index(fields=["contender", "-imported_at"], name="harnessfile_contender_idx")]

    def __str__(self) -> str:
        return f"{self.file_name} ({self.sha256[:12]})"


class HarnessResult(models.Model):
    """One metric of one task (or group) from an imported results file."""

    file = models.ForeignKey(HarnessFile, on_delete=models.CASCADE, related_name="results")
    task = models.CharField(max_length=255)
    metric = models.CharField(max_length=255)
    filter = models.CharField(max_length=255, default="none")
    value = models.FloatField()
    stderr = models.FloatField(null=True, blank=True)
    n_shot = models.IntegerField(null=True, blank=True)
    limit = models.FloatField(null=True, blank=True)
    used_limit = models.BooleanField(default=False, help_text="Scored on a subset of the task's questions.")
    is_group = models.BooleanField(default=False)
    higher_is_better = models.BooleanField(null=True, blank=True)
    task_version = models.CharField(max_length=64, null=True, blank=True)
    samples_original = models.PositiveIntegerField(null=True, blank=True)
    samples_effective = models.PositiveIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["file", "task", "metric", "filter"]
        constraints = [
            models.UniqueConstraint(fields=["file", "task", "metric", "filter"], name="unique_harness_result"),
        ]
        indexes = [models.Index(fields=["task", "metric", "filter"], name="harnessresult_key_idx")]

    def __str__(self) -> str:
        return f"{self.task} {self.metric},{self.filter} = {self.value:g}"


# Key of the column set made of every imported (task, metric, filter), offered on the correlation page.
IMPORTED_COLUMN_SET_KEY = "imported"


class BenchmarkColumnSet(models.Model):
    """Benchmark columns an admin defines for the leaderboard, next to the built-in presets."""

    key = models.SlugField(max_length=64, unique=True,
                           help_text="Used in the leaderboard URL (?preset=...); not open_llm_v1/open_llm_v2.")
    name = models.CharField(max_length=100, unique=True)
    description = models.TextField(blank=True, default="")
    average = models.BooleanField(default=False, help_text="Add the plain mean of the columns.")

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        from leaderboard.harness.presets import PRESETS

        if self.key in PRESETS or self.key == IMPORTED_COLUMN_SET_KEY:
            raise ValidationError({"key": f"{self.key!r} is the key of a built-in column set."})


class BenchmarkColumn(models.Model):
    column_set = models.ForeignKey(BenchmarkColumnSet, on_delete=models.CASCADE, related_name="columns")
    position = models.PositiveIntegerField(default=0)
    label = models.CharField(max_length=100)
    task = models.CharField(max_length=255)
    metric = models.CharField(max_length=255, help_text='e.g. "acc" or "exact_match,strict-match".')
    filter = models.CharField(max_length=255, blank=True, default="",
                              help_text='Empty: "none", or the part after the comma in the metric.')
    n_shot = models.PositiveIntegerField(null=True, blank=True,
                                         help_text="Expected shot count; other runs get a warning mark.")
    scale = models.FloatField(default=1.0, help_text="Shown value = scale × score (100 for percent).")

    class Meta:
        ordering = ["column_set", "position", "id"]
        constraints = [
            models.UniqueConstraint(fields=["column_set", "label"], name="unique_benchmark_column_label"),
        ]

    def __str__(self) -> str:
        return f"{self.label}: {self.task} {self.metric}"

    def clean(self) -> None:
        metric, comma, filter_name = self.metric.partition(",")
        if not metric.strip():
            raise ValidationError({"metric": "Expected a metric name such as acc or exact_match,strict-match."})
        if comma and self.filter and self.filter != filter_name:
            raise ValidationError({"filter": f"The metric names the filter {filter_name!r}; leave this empty."})
        if not self.task.strip() or "," in self.task:
            raise ValidationError({"task": "Expected a task name as the results file writes it."})

    @property
    def metric_name(self) -> str:
        return self.metric.partition(",")[0].strip()

    @property
    def filter_name(self) -> str:
        metric, comma, filter_name = self.metric.partition(",")
        return (filter_name if comma else self.filter).strip() or "none"


class ApiToken(models.Model):
    """A bearer token for scripts (CI pipelines posting results files). Only its sha256 is stored."""

    user = models.ForeignKey("auth.User", on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100, help_text="What the token is for, e.g. 'nightly eval pipeline'.")
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    prefix = models.CharField(max_length=12, editable=False, help_text="First characters, to recognise it.")
    created_at = models.DateTimeField(default=timezone.now)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked = models.BooleanField(default=False)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"
