"""Admin for the leaderboard: snapshots (read-only, with a refresh button), online Elo, imported battles,
imported lm-evaluation-harness results (with an upload form), custom benchmark columns, API tokens."""
from __future__ import annotations

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import Count
from django.http import HttpRequest, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html
from django.views.decorators.http import require_POST

from arena.models import ArenaModel
from leaderboard.harness.services import HarnessImportError, api_token_create, harness_import
from leaderboard.models import (
    ApiToken, BenchmarkColumn, BenchmarkColumnSet, EloRating, HarnessFile, HarnessResult, ImportedBattle,
    RatingSnapshot, SnapshotRow,
)
from leaderboard.selectors import ratings_queue_waiting
from leaderboard.services import refresh_enqueue_now


class ReadOnlyAdmin(admin.ModelAdmin):
    """Rows written by services only: viewing is allowed, editing would falsify history."""

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


class SnapshotRowInline(admin.TabularInline):
    model = SnapshotRow
    fields = ["position", "model_name", "contender", "rating", "ci_lower", "ci_upper", "rank_ub", "votes", "win_rate",
              "elo", "provisional"]
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(RatingSnapshot)
class RatingSnapshotAdmin(ReadOnlyAdmin):
    change_list_template = "leaderboard/admin_snapshot_change_list.html"
    list_display = ["id", "created_at", "category", "style_control", "status", "votes_read", "battles", "seconds",
                    "page_link"]
    list_filter = ["status", "style_control", "category"]
    date_hierarchy = "created_at"
    readonly_fields = ["category", "style_control", "created_at", "status", "error", "battles", "votes_read", "params",
                       "solver", "style", "input_digest", "seconds"]
    exclude = ["matrices"]
    inlines = [SnapshotRowInline]
    actions = ["refresh_categories"]

    @admin.display(description="page")
    def page_link(self, obj: RatingSnapshot):
        if obj.status != "ready":
            return "-"
        return format_html('<a href="{}">permalink</a>', reverse("leaderboard:snapshot", args=[obj.pk]))

    def changelist_view(self, request: HttpRequest, extra_context=None):
        waiting = ratings_queue_waiting()
        if waiting is not None and waiting > 1 and request.method == "GET":
            queue = settings.RATINGS_QUEUE
            messages.warning(request, f"{waiting} leaderboard refreshes are waiting in the Celery queue "
                                      f"\u201c{queue}\u201d: no worker seems to take it. Start one with "
                                      f"\u201ccelery -A workers worker -Q {queue}\u201d (the compose service "
                                      "\u201cratings\u201d).")
        return super().changelist_view(request, extra_context)

    def get_urls(self):
        return [
            path("refresh/", self.admin_site.admin_view(require_POST(self.refresh_view)),
                 name="leaderboard_ratingsnapshot_refresh"),
            *super().get_urls(),
        ]

    def refresh_view(self, request: HttpRequest):
        if not self.has_view_permission(request):
            messages.error(request, "You may not refresh the leaderboard.")
        else:
            refresh_enqueue_now()
            messages.success(request, "Leaderboard refresh started: new snapshots appear here when it finishes "
                                      "(categories without new votes get none).")
        return HttpResponseRedirect(reverse("admin:leaderboard_ratingsnapshot_changelist"))

    @admin.action(description="Refresh the categories of the selected snapshots now")
    def refresh_categories(self, request, queryset):
        categories = sorted(set(queryset.values_list("category", flat=True)))
        refresh_enqueue_now(categories=categories)
        self.message_user(request, f"Refresh started for: {', '.join(categories)}.", messages.SUCCESS)


@admin.register(EloRating)
class EloRatingAdmin(ReadOnlyAdmin):
    list_display = ["category", "model_name", "rating", "votes", "updated_at"]
    list_filter = ["category"]
    search_fields = ["model_name"]


@admin.register(ImportedBattle)
class ImportedBattleAdmin(ReadOnlyAdmin):
    list_display = ["id", "tstamp", "model_a", "model_b", "winner", "anony", "language", "turns", "source", "line"]
    list_filter = ["winner", "anony", "language", "source"]
    search_fields = ["model_a", "model_b", "question_id"]
    exclude = ["conversation_a", "conversation_b"]


# --------------------------------------------------------------------------------------------------
# lm-evaluation-harness results


class HarnessUploadForm(forms.Form):
    file = forms.FileField(label="Results file", help_text="results_<time>.json written by lm_eval (0.3.x or 0.4.x).")
    contender = forms.ModelChoiceField(
        queryset=ArenaModel.objects.order_by("display_name"), required=False,
        help_text="Leave empty to match the model the file names to a contender's display name, backend model "
                  "id or alias.")
    dry_run = forms.BooleanField(required=False, label="Dry run (check only, write nothing)")


class HarnessResultInline(admin.TabularInline):
    model = HarnessResult
    fields = ["task", "metric", "filter", "value", "stderr", "n_shot", "limit", "used_limit", "is_group",
              "task_version", "samples_original", "samples_effective"]
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(HarnessFile)
class HarnessFileAdmin(ReadOnlyAdmin):
    """Imported results files; new ones come through the upload form, the command or the API."""

    change_list_template = "leaderboard/admin_harness_change_list.html"
    list_display = ["id", "file_name", "contender", "harness_version", "harness_model_name", "result_count",
                    "imported_at", "imported_by", "short_sha256"]
    list_filter = ["harness_version", "contender"]
    search_fields = ["file_name", "sha256", "harness_model_name", "contender__display_name"]
    readonly_fields = ["sha256", "file_name", "size_bytes", "harness_version", "file_format", "harness_model_name",
                       "model_source", "model_args", "contender", "evaluated_at", "limit", "warnings", "imported_at",
                       "imported_by"]
    inlines = [HarnessResultInline]

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("contender", "imported_by").annotate(
            results_count=Count("results"))

    @admin.display(description="results", ordering="results_count")
    def result_count(self, obj: HarnessFile):
        return obj.results_count

    @admin.display(description="sha256")
    def short_sha256(self, obj: HarnessFile):
        return format_html('<code title="{}">{}</code>', obj.sha256, obj.sha256[:12])

    def get_urls(self):
        return [
            path("upload/", self.admin_site.admin_view(self.upload_view), name="leaderboard_harnessfile_upload"),
            *super().get_urls(),
        ]

    def upload_view(self, request: HttpRequest):
        if not request.user.is_staff or not self.has_view_permission(request):
            raise PermissionDenied
        form = HarnessUploadForm(request.POST or None, request.FILES or None)
        report = None
        if request.method == "POST" and form.is_valid():
            upload = form.cleaned_data["file"]
            try:
                report = harness_import(path_or_bytes=upload, name=upload.name,
                                        contender=form.cleaned_data["contender"],
                                        dry_run=form.cleaned_data["dry_run"], user=request.user)
            except HarnessImportError as error:
                form.add_error("file", f"{error}; nothing was imported")
            else:
                for warning in report.warnings:
                    messages.warning(request, warning)
                if not report.dry_run:
                    messages.success(request, report.summary())
                    return HttpResponseRedirect(reverse("admin:leaderboard_harnessfile_change", args=[report.file_id]))
        context = {
            **self.admin_site.each_context(request), "opts": self.model._meta, "form": form, "report": report,
            "title": "Import an lm-evaluation-harness results file",
        }
        return TemplateResponse(request, "leaderboard/admin_harness_upload.html", context)


class BenchmarkColumnInline(admin.TabularInline):
    model = BenchmarkColumn
    fields = ["position", "label", "task", "metric", "filter", "n_shot", "scale"]
    extra = 1


class BenchmarkColumnSetForm(forms.ModelForm):
    class Meta:
        model = BenchmarkColumnSet
        fields = ["key", "name", "description", "average"]


@admin.register(BenchmarkColumnSet)
class BenchmarkColumnSetAdmin(admin.ModelAdmin):
    """Custom benchmark columns for the leaderboard's preset choice (one column per task and metric)."""

    form = BenchmarkColumnSetForm
    list_display = ["name", "key", "column_count", "average"]
    search_fields = ["name", "key"]
    prepopulated_fields = {"key": ["name"]}
    inlines = [BenchmarkColumnInline]

    @admin.display(description="columns")
    def column_count(self, obj: BenchmarkColumnSet):
        return obj.columns.count()


class ApiTokenForm(forms.ModelForm):
    class Meta:
        model = ApiToken
        fields = ["user", "name"]

    def clean_user(self):
        user = self.cleaned_data["user"]
        if not user.is_staff:
            raise forms.ValidationError("Only staff users may import results; this user is not staff.")
        return user


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    """Bearer tokens for the results import API. The key is shown once, when the token is created."""

    list_display = ["name", "user", "prefix", "created_at", "last_used_at", "revoked"]
    list_filter = ["revoked"]
    readonly_fields = ["prefix", "created_at", "last_used_at"]
    actions = ["revoke"]

    def get_form(self, request, obj=None, **kwargs):
        if obj is None:
            kwargs["form"] = ApiTokenForm
        return super().get_form(request, obj, **kwargs)

    def get_fields(self, request, obj=None):
        if obj is None:
            return ["user", "name"]
        return ["user", "name", "prefix", "created_at", "last_used_at", "revoked"]

    def get_readonly_fields(self, request, obj=None):
        return ["user", "prefix", "created_at", "last_used_at"] if obj else []

    def save_model(self, request, obj, form, change):
        if change:
            super().save_model(request, obj, form, change)
            return
        token, key = api_token_create(user=form.cleaned_data["user"], name=form.cleaned_data["name"], token=obj)
        messages.warning(request, f"Token for {token.user.get_username()}: {key} (copy it now: it is not stored "
                                  "and will not be shown again).")

    @admin.action(description="Revoke the selected tokens")
    def revoke(self, request, queryset):
        count = queryset.update(revoked=True)
        self.message_user(request, f"{count} token(s) revoked.", messages.SUCCESS)
