from django.urls import path
from webhooks import views

urlpatterns = [
    path("events/", views.create_event),
    path("events/<int:event_id>/", views.event_progress),
]
