"""Admin for the leaderboard: snapshots (read-only, with a refresh button), online Elo, imported battles."""
from __future__ import annotations

from django.contrib import admin, messages
from django.http import HttpRequest, HttpResponseRedirect
from django.urls import path, reverse
from django.utils.html import format_html
from django.views.decorators.http import require_POST

from leaderboard.models import EloRating, ImportedBattle, RatingSnapshot, SnapshotRow
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
