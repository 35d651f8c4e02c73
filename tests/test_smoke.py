import pytest


@pytest.mark.django_db
def test_the_admin_login_page_answers(client):
    assert client.get("/admin/login/").status_code == 200
