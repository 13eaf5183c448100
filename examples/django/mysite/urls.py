from django.urls import path

from myapp import views

urlpatterns = [
    path("signup/", views.signup),
    path("runs/<str:run_id>/", views.run_status),
    path("runs/<str:run_id>/answer/", views.answer),
]
