from django.db import models


class Greeting(models.Model):
    name = models.CharField(max_length=100)
    requested_at = models.DateTimeField()
    delivered_at = models.DateTimeField(auto_now_add=True)
