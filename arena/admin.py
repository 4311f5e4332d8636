"""Django admin for the endpoint registry: servers, decoding presets, contenders."""
from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.db.models import Count
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html

from arena.models import ArenaModel, BackendKind, BackendServer, Battle, DecodingPreset
from arena.services.registry import contender_test_connection, redact, server_discover_models, server_health_check
from workers.backends import BackendError, get_adapter


class BackendServerForm(forms.ModelForm):
    base_url = forms.URLField(max_length=500, assume_scheme="http", help_text=BackendServer._meta.get_field("base_url").help_text)
    # The token is write-only: never rendered back into the page.
    auth_token = forms.CharField(
        required=False, widget=forms.PasswordInput(render_value=False),
        help_text="Bearer token the server expects. Leave blank to keep the stored one.",
    )
    clear_auth_token = forms.BooleanField(required=False, help_text="Remove the stored token.")
    skip_connection_check = forms.BooleanField(
        required=False, help_text="Save even if the server does not answer now (it will be marked down until it does).",
    )

    class Meta:
        model = BackendServer
        fields = ["name", "kind", "base_url", "auth_token", "clear_auth_token", "max_concurrency",
                  "connect_timeout_s", "stall_timeout_s", "deadline_s", "skip_connection_check"]

    def clean(self):
        cleaned = super().clean()
        if self.errors:
            return cleaned
        token = cleaned.get("auth_token") or ""
        if cleaned.get("clear_auth_token"):
            token = ""
        elif not token and self.instance.pk:
            token = self.instance.auth_token
        cleaned["auth_token"] = token
        if not cleaned.get("skip_connection_check"):
            probe = BackendServer(
                kind=cleaned["kind"], base_url=cleaned["base_url"].rstrip("/"), auth_token=token,
                connect_timeout_s=cleaned["connect_timeout_s"], stall_timeout_s=min(cleaned["stall_timeout_s"], 10),
                deadline_s=min(cleaned["deadline_s"], 15),
            )
            try:
                get_adapter(probe.kind).health(probe.endpoint())
            except BackendError as exc:
                raise forms.ValidationError(
                    "Could not reach the server: %(error)s. Check the URL and kind, or tick "
                    "'skip connection check' to save it anyway.",
                    params={"error": redact(str(exc), secrets=[token])},
                )
        return cleaned

    def save(self, commit=True):
        self.instance.auth_token = self.cleaned_data["auth_token"]
        return super().save(commit=commit)


@admin.register(BackendServer)
class BackendServerAdmin(admin.ModelAdmin):
    form = BackendServerForm
    list_display = ["name", "kind", "base_url", "health_badge", "consecutive_failures", "last_checked_at",
                    "max_concurrency", "contender_count"]
    list_filter = ["kind", "health_status"]
    search_fields = ["name", "base_url"]
    readonly_fields = ["health_status", "consecutive_failures", "last_checked_at", "last_healthy_at", "last_error",
                       "token_set"]
    actions = ["check_health", "discover_models"]

    def get_fields(self, request, obj=None):
        fields = list(self.form.Meta.fields)
        return fields + (self.readonly_fields if obj else [])

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(contender_total=Count("contenders"))

    @admin.display(description="contenders", ordering="contender_total")
    def contender_count(self, obj):
        return obj.contender_total

    @admin.display(description="health", ordering="health_status")
    def health_badge(self, obj):
        colour = {"up": "#1a7f37", "down": "#cf222e"}.get(obj.health_status, "#6e7781")
        return format_html('<b style="color:{}">{}</b>', colour, obj.get_health_status_display())

    @admin.display(description="auth token", boolean=True)
    def token_set(self, obj):
        return bool(obj.auth_token)

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        if not form.cleaned_data.get("skip_connection_check"):
            server_health_check(server=obj)

    @admin.action(description="Check health now")
    def check_health(self, request, queryset):
        for server in queryset:
            result = server_health_check(server=server)
            level = messages.SUCCESS if result.ok else messages.ERROR
            text = f"{server.name}: {result.status}" + (f" ({result.error})" if result.error else "")
            self.message_user(request, text, level)

    @admin.action(description="Discover models (creates disabled contenders for review)")
    def discover_models(self, request, queryset):
        for server in queryset:
            try:
                report = server_discover_models(server=server)
            except BackendError as exc:
                self.message_user(request, f"{server.name}: discovery failed: "
                                  f"{redact(str(exc), secrets=[server.auth_token])}", messages.ERROR)
                continue
            self.message_user(
                request,
                f"{server.name}: found {len(report.found)} model(s); created {len(report.created)} disabled "
                f"contender(s): {', '.join(c.display_name for c in report.created) or 'none'}; "
                f"already registered: {', '.join(report.already_registered) or 'none'}.",
                messages.SUCCESS,
            )


@admin.register(DecodingPreset)
class DecodingPresetAdmin(admin.ModelAdmin):
    list_display = ["name", "greedy", "temperature", "top_p", "top_k", "max_new_tokens", "repetition_penalty", "seed"]


class ArenaModelForm(forms.ModelForm):
    class Meta:
        model = ArenaModel
        fields = "__all__"

    def clean(self):
        cleaned = super().clean()
        server, model_id = cleaned.get("server"), cleaned.get("backend_model_id")
        if self.errors or not server or not model_id or server.kind == BackendKind.TGI:
            # A TGI server serves exactly one model, whatever name the request carries.
            return cleaned
        try:
            available = [m.model_id for m in get_adapter(server.kind).discover(server.endpoint())]
        except BackendError:
            # The server may be down right now; the model id is checked again at test connection.
            return cleaned
        if model_id not in available:
            self.add_error("backend_model_id", forms.ValidationError(
                "The server has no model %(model)s. It offers: %(available)s.",
                params={"model": model_id, "available": ", ".join(available) or "none"},
            ))
        return cleaned


@admin.register(ArenaModel)
class ArenaModelAdmin(admin.ModelAdmin):
    form = ArenaModelForm
    list_display = ["display_name", "server", "backend_model_id", "api", "preset", "enabled", "sampling_weight",
                    "flavour", "organisation", "test_link"]
    list_filter = ["enabled", "flavour", "server", "commercial_use"]
    search_fields = ["display_name", "backend_model_id", "organisation"]
    list_editable = ["enabled", "sampling_weight"]
    actions = ["enable", "disable"]
    fieldsets = [
        (None, {"fields": ["display_name", "server", "backend_model_id", "api", "preset", "system_prompt",
                           "enabled", "sampling_weight"]}),
        ("Metadata", {"fields": ["organisation", "licence", "commercial_use", "parameter_count_b", "flavour",
                                 "context_length", "knowledge_cutoff", "aliases"]}),
    ]

    def get_urls(self):
        return [
            path("<int:pk>/test-connection/", self.admin_site.admin_view(self.test_connection_view),
                 name="arena_arenamodel_test_connection"),
        ] + super().get_urls()

    @admin.display(description="test")
    def test_link(self, obj):
        return format_html('<a href="{}">Test connection</a>',
                           reverse("admin:arena_arenamodel_test_connection", args=[obj.pk]))

    def test_connection_view(self, request, pk):
        contender = self.get_object(request, str(pk))
        if contender is None or not self.has_change_permission(request, contender):
            return self._get_obj_does_not_exist_redirect(request, self.opts, str(pk))
        report = contender_test_connection(contender=contender)
        context = {**self.admin_site.each_context(request), "opts": self.opts, "contender": contender,
                   "report": report, "title": f"Test connection: {contender.display_name}"}
        return TemplateResponse(request, "admin/arena/test_connection.html", context)

    @admin.action(description="Enable selected contenders")
    def enable(self, request, queryset):
        self.message_user(request, f"Enabled {queryset.update(enabled=True)} contender(s).")

    @admin.action(description="Disable selected contenders")
    def disable(self, request, queryset):
        self.message_user(request, f"Disabled {queryset.update(enabled=False)} contender(s).")


@admin.register(Battle)
class BattleAdmin(admin.ModelAdmin):
    """Battles for review: an identity leak (an answer named a contender) is flagged, never shown to raters."""

    list_display = ["public_id", "rater", "model_a", "model_b", "anonymous", "status", "identity_leak", "created_at"]
    list_filter = ["identity_leak", "anonymous", "status"]
    search_fields = ["public_id", "rater__username", "model_a__display_name", "model_b__display_name"]
    list_select_related = ["rater", "model_a", "model_b"]
    date_hierarchy = "created_at"
    readonly_fields = ["public_id", "rater", "model_a", "model_b", "anonymous", "status", "created_at",
                       "revealed_at"]
    fields = readonly_fields[:6] + ["identity_leak"] + readonly_fields[6:]

    def has_add_permission(self, request):
        return False  # battles are started by raters, not typed in
