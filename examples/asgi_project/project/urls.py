from django.urls import path
from hello import views

urlpatterns = [
    path("greet/", views.greet_view),
    path("greetings/", views.greetings),
]
