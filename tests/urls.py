"""The admin, for tests/test_admin.py and tests/test_admin_browser.py."""

from django.contrib import admin
from django.urls import path

urlpatterns = [path("admin/", admin.site.urls)]
