"""Leaderboard URLs, mounted at /leaderboard/ by the project's urls."""
from django.urls import path

from leaderboard import views

app_name = "leaderboard"

urlpatterns = [
    path("", views.board, name="board"),
    path("snapshots/", views.snapshot_list, name="snapshots"),
    path("snapshots/<int:snapshot_id>/", views.snapshot_page, name="snapshot"),
    path("benchmarks/", views.benchmarks_page, name="benchmarks"),
    path("models/<path:model_name>/", views.model_page, name="model"),
    path("api/leaderboard.json", views.board_json, name="board-json"),
    path("api/leaderboard.csv", views.board_csv, name="board-csv"),
    path("api/history.json", views.history_json, name="history-json"),
    path("api/snapshots/<int:snapshot_id>.json", views.snapshot_json, name="snapshot-json"),
    path("api/snapshots/<int:snapshot_id>.csv", views.snapshot_csv, name="snapshot-csv"),
    path("api/models/<path:model_name>.json", views.model_json, name="model-json"),
    path("api/benchmarks.json", views.benchmarks_json, name="benchmarks-json"),
    path("api/harness/import", views.harness_import_api, name="harness-import-api"),
    path("plotly.min.js", views.plotly_js, name="plotly-js"),
]
