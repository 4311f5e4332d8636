"""The registry of backend servers, decoding presets and arena contenders."""
from __future__ import annotations

from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator
from django.db import models

from workers.backends.base import DecodingParams, Endpoint


class BackendKind(models.TextChoices):
    TGI = "tgi", "Hugging Face TGI"
    OLLAMA = "ollama", "Ollama"
    OPENAI = "openai", "OpenAI-compatible (vLLM, TGI /v1, Ollama /v1)"


class HealthStatus(models.TextChoices):
    UNKNOWN = "unknown", "Not checked yet"
    UP = "up", "Up"
    DOWN = "down", "Down"


class BackendServer(models.Model):
    """One model server on a GPU host (TGI, Ollama or any OpenAI-compatible server)."""

    name = models.CharField(max_length=100, unique=True)
    kind = models.CharField(max_length=16, choices=BackendKind.choices)
    base_url = models.URLField(
        max_length=500,
        help_text="TGI: the server root (http://host:3000). Ollama: http://host:11434. "
        "OpenAI-compatible: the root without /v1 (http://host:8000).",
    )
    # Stored for requests to the server; never rendered back, logged or exported.
    auth_token = models.CharField(max_length=500, blank=True, default="")
    max_concurrency = models.PositiveIntegerField(
        default=4, validators=[MinValueValidator(1)],
        help_text="Generations in flight on this server, across all worker processes.",
    )
    connect_timeout_s = models.FloatField(default=5.0, validators=[MinValueValidator(0.1)])
    stall_timeout_s = models.FloatField(
        default=30.0, validators=[MinValueValidator(0.1)],
        help_text="A generation with no bytes from the server for this long fails as stalled.",
    )
    deadline_s = models.FloatField(
        default=300.0, validators=[MinValueValidator(1.0)],
        help_text="A generation taking longer than this in total fails.",
    )
    health_status = models.CharField(max_length=16, choices=HealthStatus.choices, default=HealthStatus.UNKNOWN)
    consecutive_failures = models.PositiveIntegerField(default=0)
    last_checked_at = models.DateTimeField(null=True, blank=True)
    last_healthy_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        if self.base_url:
            self.base_url = self.base_url.rstrip("/")

    def endpoint(self, *, model_id: str = "", api: str = "chat") -> Endpoint:
        return Endpoint(
            kind=self.kind,
            base_url=self.base_url,
            model_id=model_id or ("tgi" if self.kind == BackendKind.TGI else ""),
            auth_token=self.auth_token,
            api=api,
            connect_timeout_s=self.connect_timeout_s,
            stall_timeout_s=self.stall_timeout_s,
            deadline_s=self.deadline_s,
        )


class DecodingPreset(models.Model):
    """Our decoding parameters; each adapter maps them to its server's rules."""

    name = models.CharField(max_length=100, unique=True)
    greedy = models.BooleanField(default=False, help_text="Deterministic decoding; sampling fields are ignored.")
    temperature = models.FloatField(null=True, blank=True, default=0.7)
    top_p = models.FloatField(null=True, blank=True, help_text="Nucleus sampling in (0, 1]; 1 or empty means off.")
    top_k = models.PositiveIntegerField(null=True, blank=True)
    max_new_tokens = models.PositiveIntegerField(default=512)
    repetition_penalty = models.FloatField(null=True, blank=True)
    seed = models.BigIntegerField(null=True, blank=True)
    stop = models.JSONField(default=list, blank=True, help_text='Stop strings, e.g. ["</answer>"] (at most 4).')

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        errors: dict[str, str] = {}
        if self.temperature is not None and not (0.0 <= self.temperature <= 5.0):
            errors["temperature"] = "Temperature must be between 0 and 5."
        if self.top_p is not None and not (0.0 < self.top_p <= 1.0):
            errors["top_p"] = "top_p must be greater than 0 and at most 1."
        if self.top_k is not None and self.top_k < 1:
            errors["top_k"] = "top_k must be at least 1."
        if not (1 <= self.max_new_tokens <= 32768):
            errors["max_new_tokens"] = "max_new_tokens must be between 1 and 32768."
        if self.repetition_penalty is not None and not (0.0 < self.repetition_penalty <= 10.0):
            errors["repetition_penalty"] = "repetition_penalty must be greater than 0 and at most 10."
        if not isinstance(self.stop, list) or not all(isinstance(s, str) and s for s in self.stop):
            errors["stop"] = 'Stop must be a JSON list of non-empty strings, e.g. ["###"].'
        elif len(self.stop) > 4:
            errors["stop"] = "At most 4 stop strings (TGI's limit)."
        if errors:
            raise ValidationError(errors)

    def params(self) -> DecodingParams:
        return DecodingParams(
            greedy=self.greedy,
            temperature=self.temperature,
            top_p=self.top_p,
            top_k=self.top_k,
            max_new_tokens=self.max_new_tokens,
            repetition_penalty=self.repetition_penalty,
            seed=self.seed,
            stop=tuple(self.stop or ()),
        )


class Flavour(models.TextChoices):
    BASE = "base", "Base"
    INSTRUCT = "instruct", "Instruct"
    CHAT = "chat", "Chat"
    LONG_CONTEXT = "long-context", "Long context"


class ApiMode(models.TextChoices):
    CHAT = "chat", "Chat (server applies the chat template)"
    COMPLETION = "completion", "Raw prompt (TGI /generate_stream)"


class ArenaModel(models.Model):
    """A contender: one backend model with one decoding preset, as raters meet it."""

    display_name = models.CharField(max_length=100, unique=True)
    server = models.ForeignKey(BackendServer, on_delete=models.PROTECT, related_name="contenders")
    backend_model_id = models.CharField(
        max_length=300, help_text="The model name the server knows (Ollama tag, vLLM served name; 'tgi' for TGI)."
    )
    api = models.CharField(max_length=16, choices=ApiMode.choices, default=ApiMode.CHAT)
    preset = models.ForeignKey(DecodingPreset, on_delete=models.PROTECT, related_name="contenders")
    system_prompt = models.TextField(blank=True, default="")
    organisation = models.CharField(max_length=100, blank=True, default="")
    licence = models.CharField(max_length=100, blank=True, default="")
    commercial_use = models.BooleanField(default=False, help_text="The licence allows commercial use.")
    parameter_count_b = models.DecimalField(
        "parameters (billions)", max_digits=8, decimal_places=2, null=True, blank=True
    )
    flavour = models.CharField(max_length=16, choices=Flavour.choices, default=Flavour.CHAT)
    context_length = models.PositiveIntegerField(null=True, blank=True)
    knowledge_cutoff = models.DateField(null=True, blank=True)
    aliases = models.JSONField(
        default=list, blank=True, help_text='Other names the model may call itself, e.g. ["Llama", "Meta AI"].'
    )
    enabled = models.BooleanField(default=False)
    sampling_weight = models.FloatField(default=1.0, validators=[MinValueValidator(0.0)])
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["display_name"]
        constraints = [
            models.UniqueConstraint(
                fields=["server", "backend_model_id", "preset", "api"], name="unique_contender_per_server_model_preset"
            ),
            models.CheckConstraint(condition=models.Q(sampling_weight__gte=0), name="sampling_weight_not_negative"),
        ]

    def __str__(self) -> str:
        return self.display_name

    def clean(self) -> None:
        if not isinstance(self.aliases, list) or not all(isinstance(a, str) and a.strip() for a in self.aliases):
            raise ValidationError({"aliases": 'Aliases must be a JSON list of non-empty strings, e.g. ["Llama"].'})
        if self.api == ApiMode.COMPLETION and self.server_id and self.server.kind != BackendKind.TGI:
            raise ValidationError({"api": "Raw-prompt mode is only available on TGI servers."})

    def endpoint(self) -> Endpoint:
        return self.server.endpoint(model_id=self.backend_model_id, api=self.api)


class Side(models.TextChoices):
    A = "a", "A"
    B = "b", "B"


class BattleStatus(models.TextChoices):
    ACTIVE = "active", "In progress"
    VOTED = "voted", "Voted"
    FAILED = "failed", "Failed"


class Battle(models.Model):
    """Two contenders answering the same rater, side by side, anonymous until the vote."""

    # A random public id: sequential ids would let a rater count or probe other battles.
    public_id = models.UUIDField(unique=True, editable=False)
    rater = models.ForeignKey("auth.User", on_delete=models.PROTECT, related_name="battles")
    model_a = models.ForeignKey(ArenaModel, on_delete=models.PROTECT, related_name="battles_as_a")
    model_b = models.ForeignKey(ArenaModel, on_delete=models.PROTECT, related_name="battles_as_b")
    anonymous = models.BooleanField(default=True)
    status = models.CharField(max_length=16, choices=BattleStatus.choices, default=BattleStatus.ACTIVE)
    identity_leak = models.BooleanField(default=False, help_text="An answer named a contender.")
    created_at = models.DateTimeField(auto_now_add=True)
    revealed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(condition=~models.Q(model_a=models.F("model_b")), name="battle_two_contenders"),
        ]

    def __str__(self) -> str:
        return f"battle {self.public_id}"


class Turn(models.Model):
    battle = models.ForeignKey(Battle, on_delete=models.CASCADE, related_name="turns")
    index = models.PositiveIntegerField()
    prompt = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["battle", "index"]
        constraints = [models.UniqueConstraint(fields=["battle", "index"], name="unique_turn_index")]


class GenerationStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    STREAMING = "streaming", "Streaming"
    DONE = "done", "Done"
    FAILED = "failed", "Failed"
    STOPPED = "stopped", "Stopped"


class Generation(models.Model):
    """One side's answer to one turn."""

    turn = models.ForeignKey(Turn, on_delete=models.CASCADE, related_name="generations")
    side = models.CharField(max_length=1, choices=Side.choices)
    contender = models.ForeignKey(ArenaModel, on_delete=models.PROTECT, related_name="generations")
    status = models.CharField(max_length=16, choices=GenerationStatus.choices, default=GenerationStatus.QUEUED)
    text = models.TextField(blank=True, default="")
    finish_reason = models.CharField(max_length=32, blank=True, default="")
    input_tokens = models.PositiveIntegerField(null=True, blank=True)
    output_tokens = models.PositiveIntegerField(null=True, blank=True)
    time_to_first_token_ms = models.FloatField(null=True, blank=True)
    time_per_output_token_ms = models.FloatField(null=True, blank=True)
    decoding_params = models.JSONField(default=dict, blank=True)
    # Internal only (admins, logs): never sent to a rater before the vote.
    error_code = models.CharField(max_length=32, blank=True, default="")
    error_message = models.TextField(blank=True, default="")
    attempts = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    deadline_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["turn", "side"]
        constraints = [models.UniqueConstraint(fields=["turn", "side"], name="unique_generation_side")]


class Winner(models.TextChoices):
    # The FastChat clean_battle vocabulary, so data moves both ways with the public tools.
    MODEL_A = "model_a", "A is better"
    MODEL_B = "model_b", "B is better"
    TIE = "tie", "Tie"
    BOTH_BAD = "tie (bothbad)", "Both are bad"


class Vote(models.Model):
    # One vote per battle, enforced by the database (OneToOne = unique), not by a check in Python.
    battle = models.OneToOneField(Battle, on_delete=models.CASCADE, related_name="vote")
    rater = models.ForeignKey("auth.User", on_delete=models.PROTECT, related_name="votes")
    winner = models.CharField(max_length=16, choices=Winner.choices)
    created_at = models.DateTimeField(auto_now_add=True)
    seconds_after_completion = models.FloatField(null=True, blank=True)
