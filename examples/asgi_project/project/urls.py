from django.urls import path
from webhooks import views

urlpatterns = [
    path("events/", views.create_event),
    path("events/<int:event_id>/", views.event_progress),
    path("events/<int:event_id>/summary/", views.event_summary),
    path("exports/", views.create_export),
    path("exports/<int:export_id>/", views.export_status),
]
