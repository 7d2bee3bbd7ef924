from django.urls import path

from . import views, wizard_views

app_name = "balancer"


def crud(prefix, name, list_view, detail, create, update, delete):
    return [
        path(f"{prefix}/", list_view.as_view(), name=f"{name}_list"),
        path(f"{prefix}/add/", create.as_view(), name=f"{name}_create"),
        path(f"{prefix}/<int:pk>/", detail.as_view(), name=f"{name}_detail"),
        path(f"{prefix}/<int:pk>/edit/", update.as_view(), name=f"{name}_update"),
        path(f"{prefix}/<int:pk>/delete/", delete.as_view(), name=f"{name}_delete"),
    ]


v = views
urlpatterns = [
    path("", v.home, name="home"),
    *crud("services", "service", v.ServiceList, v.ServiceDetail, v.ServiceCreate, v.ServiceUpdate, v.ServiceDelete),
    *crud("pools", "pool", v.PoolList, v.PoolDetail, v.PoolCreate, v.PoolUpdate, v.PoolDelete),
    path("servers/", v.ServerList.as_view(), name="server_list"),
    path("pools/<int:pool>/servers/add/", v.ServerCreate.as_view(), name="server_create"),
    path("servers/<int:pk>/", v.ServerDetail.as_view(), name="server_detail"),
    path("servers/<int:pk>/edit/", v.ServerUpdate.as_view(), name="server_update"),
    path("servers/<int:pk>/delete/", v.ServerDelete.as_view(), name="server_delete"),
    path("servers/<int:pk>/state/", v.ServerState.as_view(), name="server_state"),
    *crud(
        "persistence", "persistence", v.PersistenceList, v.PersistenceDetail, v.PersistenceCreate,
        v.PersistenceUpdate, v.PersistenceDelete,
    ),
    *crud(
        "health-checks", "healthcheck", v.HealthCheckList, v.HealthCheckDetail, v.HealthCheckCreate,
        v.HealthCheckUpdate, v.HealthCheckDelete,
    ),
    *crud(
        "certificates", "certificate", v.CertificateList, v.CertificateDetail, v.CertificateCreate,
        v.CertificateUpdate, v.CertificateDelete,
    ),
    path("certificates/generate/", v.CertificateGenerate.as_view(), name="certificate_generate"),
    path("apply/", v.ApplyView.as_view(), name="apply"),
    path("versions/", v.VersionList.as_view(), name="version_list"),
    path("versions/<int:number>/", v.VersionDetail.as_view(), name="version_detail"),
    path("versions/<int:number>/rollback/", v.RollbackView.as_view(), name="version_rollback"),
    path("audit/", v.AuditList.as_view(), name="audit"),
    path("export.yaml", v.export_yaml, name="export"),
    path("horizon/", wizard_views.HorizonSetupList.as_view(), name="horizon_setups"),
    path("horizon/wizard/", wizard_views.HorizonWizard.as_view(), name="horizon_wizard"),
    path("horizon/<int:pk>/", wizard_views.HorizonSetupDetail.as_view(), name="horizon_setup"),
]
