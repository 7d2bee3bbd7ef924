app_name = "balancer"
urlpatterns = []
