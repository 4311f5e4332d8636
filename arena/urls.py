from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from arena import metrics, views

urlpatterns = [
    path("", views.home, name="home"),
    path("battle/", views.battle_page, name="battle"),
    path("battle/named/", views.named_battle_page, name="battle_named"),
    path("history/", views.history_page, name="history"),
    path("healthz", views.healthz, name="healthz"),
    path("metrics", metrics.metrics_view, name="metrics"),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("leaderboard/", include("leaderboard.urls")),
    path("admin/", admin.site.urls),
]
