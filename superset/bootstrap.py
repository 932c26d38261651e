"""The Superset side of `bagula superset init|export`, run with the Superset environment's python.

    python superset/bootstrap.py init ASSETS_DIR     # schema, roles, admin, assets, project roles (idempotent)
    python superset/bootstrap.py export ASSETS_DIR   # the metadata database's assets, as kept in the repo
    python superset/bootstrap.py sync-projects ASSETS_DIR   # project roles only (after a new project)

Bagula is not installed in that environment (their pins clash): `bagula/superset.py`
computes everything and passes it in the environment:

    SUPERSET_CONFIG_PATH, BAGULA_SUPERSET_SECRET_KEY, BAGULA_SUPERSET_METADATA_DB_URL  (superset_config.py)
    BAGULA_SUPERSET_ADMIN_USERNAME       the admin to create, if missing
    BAGULA_SUPERSET_ADMIN_PASSWORD       the admin's password (reset when it no longer matches), or
    BAGULA_SUPERSET_NEW_ADMIN_PASSWORD   a password to use only if the admin has to be created
    BAGULA_SUPERSET_MARTS_URI            the marts' SQLAlchemy URI, without its password
    BAGULA_SUPERSET_MARTS_PASSWORD       the read-only role's password
    BAGULA_SUPERSET_PROJECTS             the projects, as JSON [{"id", "name"}] (init, sync-projects)

The last line of stdout is a JSON summary for the caller; Superset's own logging goes to stderr.

The assets directory has the layout of a Superset export (metadata.yaml, databases/, datasets/,
charts/, dashboards/) with the fields that depend on one installation taken out: ids assigned
by the metadata database, the connection's host and port. Import puts them back; export takes
them out again, so that importing and exporting gives the files back unchanged.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from pathlib import Path
from typing import Any

import yaml

# The URI kept in databases/*.yaml; the real one (host, port, database, role) replaces it on import.
PLACEHOLDER_MARTS_URI = "postgresql+psycopg2://bagula_superset_reader:XXXXXXXXXX@localhost:5432/bagula"
ASSET_FOLDERS = ("databases", "datasets", "charts", "dashboards")


def _env(name: str) -> str:
    value = os.environ.get(name, "")
    if not value:
        sys.exit(f"bootstrap: {name} is not set")
    return value


def _app():
    # Superset logs to stdout by default; keep stdout for the summary.
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING, force=True)
    from superset.app import create_app

    return create_app()


def read_assets(assets_dir: Path) -> dict[str, str]:
    """{path inside the bundle: YAML text}, as Superset's import commands take them."""
    contents = {"metadata.yaml": (assets_dir / "metadata.yaml").read_text()}
    for folder in ASSET_FOLDERS:
        for path in sorted((assets_dir / folder).glob("*.yaml")):
            contents[f"{folder}/{path.name}"] = path.read_text()
    return contents


def _with_marts_uri(contents: dict[str, str], marts_uri: str) -> dict[str, str]:
    """Point every database file at this installation's marts (the password comes separately)."""
    from sqlalchemy.engine.url import make_url

    masked = make_url(marts_uri).set(password="XXXXXXXXXX")
    result = dict(contents)
    for name, text in contents.items():
        if name.startswith("databases/"):
            config = yaml.safe_load(text)
            config["sqlalchemy_uri"] = masked.render_as_string(hide_password=False)
            result[name] = yaml.safe_dump(config, sort_keys=False)
    return result


def _ensure_admin(security_manager, username: str) -> str:
    from werkzeug.security import check_password_hash

    password = os.environ.get("BAGULA_SUPERSET_ADMIN_PASSWORD", "")
    user = security_manager.find_user(username=username)
    if user is None:
        password = password or _env("BAGULA_SUPERSET_NEW_ADMIN_PASSWORD")
        created = security_manager.add_user(
            username, "Bagula", "Admin", f"{username}@bagula.invalid",
            security_manager.find_role("Admin"), password,
        )
        if not created:
            sys.exit(f"bootstrap: could not create the Superset admin {username!r}")
        return "created"
    if password and not check_password_hash(user.password, password):
        security_manager.reset_password(user.id, password)
        return "password reset"
    return "unchanged"


def _meaning(contents: dict[str, str]) -> dict[str, Any]:
    """The files as data: hand-edited YAML (or JSON) formatted differently means the same."""
    parsed = {name: yaml.safe_load(text) for name, text in contents.items()}
    for name, config in parsed.items():
        if name.startswith("charts/") and isinstance(config.get("query_context"), str):
            config["query_context"] = json.loads(config["query_context"])
    return parsed


def _connection_is_current(marts_uri: str, password: str) -> bool:
    """Whether every stored connection already points at these marts with this password."""
    from sqlalchemy.engine.url import make_url
    from superset.models.core import Database

    from superset import db

    wanted = make_url(marts_uri).set(password=password)
    databases = db.session.query(Database).all()
    return bool(databases) and all(make_url(d.sqlalchemy_uri_decrypted) == wanted for d in databases)


def init(assets_dir: Path) -> dict[str, Any]:
    app = _app()
    with app.app_context():
        from flask_migrate import upgrade
        from superset.commands.importers.v1.assets import ImportAssetsCommand
        from superset.models.dashboard import Dashboard
        from superset.utils.core import override_user

        from superset import appbuilder, db, security_manager

        upgrade()
        # What `superset init` does: permissions and the built-in roles.
        appbuilder.add_permissions(update_perms=True)
        security_manager.sync_role_definitions()
        db.session.commit()

        username = _env("BAGULA_SUPERSET_ADMIN_USERNAME")
        admin_state = _ensure_admin(security_manager, username)
        db.session.commit()

        marts_uri, password = _env("BAGULA_SUPERSET_MARTS_URI"), _env("BAGULA_SUPERSET_MARTS_PASSWORD")
        repository = read_assets(assets_dir)
        admin = security_manager.find_user(username=username)
        with override_user(admin):
            # Import rewrites every row (and its change time) even when nothing changed: compare
            # first, so that a second run changes nothing. Anything edited in Superset since
            # the last import differs, and is overwritten by what the repository says.
            current = {"metadata.yaml": repository["metadata.yaml"], **_exported_assets()}
            if _meaning(current) == _meaning(repository) and _connection_is_current(marts_uri, password):
                assets_state = "unchanged"
            else:
                contents = _with_marts_uri(repository, marts_uri)
                passwords = {name: password for name in contents if name.startswith("databases/")}
                ImportAssetsCommand(contents, passwords=passwords).run()
                assets_state = "imported"

        projects = sync_projects(_projects())

        dashboards = [
            {"title": d.dashboard_title, "slug": d.slug, "path": f"/superset/dashboard/{d.slug or d.id}/"}
            for d in db.session.query(Dashboard).order_by(Dashboard.id)
        ]
        return {"admin": admin_state, "admin_username": username, "assets": assets_state, "dashboards": dashboards,
                "projects": projects}


# --- per-project access -------------------------------------------------------------------

# A Superset role name holds at most 64 characters.
ROLE_NAME_MAX = 64
PROJECT_FILTER_PREFIX = "bagula project "
PROJECT_GROUP_KEY = "project_id"


def project_role_name(name: str, project_id: str) -> str:
    """'Project <name>'; a name too long for a role is cut and made unique by the id."""
    full = f"Project {name}"
    if len(full) <= ROLE_NAME_MAX:
        return full
    suffix = f"... {project_id[:8]}"
    return full[: ROLE_NAME_MAX - len(suffix)] + suffix


def _projects() -> list[dict[str, str]]:
    return json.loads(os.environ.get("BAGULA_SUPERSET_PROJECTS") or "[]")


def sync_projects(projects: list[dict[str, str]]) -> dict[str, Any]:
    """A role per project that sees that project's rows only (in an app context); idempotent.

    Each role 'Project <name>' gets what Gamma gets (dashboards, charts, explore; no SQL Lab,
    no database access) plus read access to every dataset, and a Regular row-level security
    filter `project_id = '<id>'` on every dataset, named 'bagula project <id>'. Filters share
    the group key project_id, so a user with two project roles sees both projects (OR) and
    never more. Datasets added since the last run get the filters too; nothing that is
    already as it should be is written again. A user granted a project is a user with that
    role (Settings > List users); admins see everything.
    """
    from superset.connectors.sqla.models import RowLevelSecurityFilter, SqlaTable
    from superset.utils.core import RowLevelSecurityFilterType

    from superset import db, security_manager

    datasets = db.session.query(SqlaTable).order_by(SqlaTable.id).all()
    gamma = security_manager.find_role("Gamma")
    viewer = list(gamma.permissions) if gamma else []
    for dataset in datasets:
        viewer.append(security_manager.add_permission_view_menu("datasource_access", dataset.perm))
    changed: list[str] = []
    roles = []
    for project in sorted(projects, key=lambda p: p["name"]):
        project_id = str(project["id"])
        name = project_role_name(project["name"], project_id)
        rls = db.session.query(RowLevelSecurityFilter).filter_by(name=PROJECT_FILTER_PREFIX + project_id).one_or_none()
        role = security_manager.find_role(name)
        if role is None and rls is not None and rls.roles:
            role = rls.roles[0]  # the project's role under an older name
            role.name = name
            changed.append(name)
        if role is None:
            role = security_manager.add_role(name)
            changed.append(name)
        if set(role.permissions) != set(viewer):
            role.permissions = list(viewer)
            changed.append(name)
        if rls is None:
            rls = RowLevelSecurityFilter(name=PROJECT_FILTER_PREFIX + project_id)
            db.session.add(rls)
        wanted = {
            "filter_type": RowLevelSecurityFilterType.REGULAR,
            "group_key": PROJECT_GROUP_KEY,
            "clause": f"project_id = '{project_id}'",
            "description": f"Project {project['name']!r}: only its rows, for the role {name!r} (bagula superset init)",
        }
        for attribute, value in wanted.items():
            if getattr(rls, attribute) != value:
                setattr(rls, attribute, value)
                changed.append(name)
        if list(rls.roles) != [role]:
            rls.roles = [role]
            changed.append(name)
        if {t.id for t in rls.tables} != {d.id for d in datasets}:
            rls.tables = list(datasets)
            changed.append(name)
        roles.append(name)
    db.session.commit()
    return {"roles": roles, "changed": sorted(set(changed)), "datasets": len(datasets)}


def sync_projects_only() -> dict[str, Any]:
    app = _app()
    with app.app_context():
        return {"projects": sync_projects(_projects())}


# --- export -------------------------------------------------------------------------------


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


class _AssetDumper(yaml.SafeDumper):
    """Block style for multi-line text (SQL, query contexts), so that diffs are line by line."""


def _represent_str(dumper: yaml.SafeDumper, text: str) -> yaml.Node:
    style = "|" if "\n" in text else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=style)


_AssetDumper.add_representer(str, _represent_str)


def dump_yaml(config: dict[str, Any]) -> str:
    return yaml.dump(config, Dumper=_AssetDumper, sort_keys=False, allow_unicode=True, width=100)


# Ids of this installation (import sets them from the UUIDs) and the URL the chart was saved from.
VOLATILE_FORM_DATA = ("datasource", "slice_id", "dashboards", "url_params")


def _strip_chart(config: dict[str, Any]) -> dict[str, Any]:
    for key in VOLATILE_FORM_DATA:
        config["params"].pop(key, None)
    if config.get("query_context"):
        query_context = json.loads(config["query_context"])
        query_context.pop("datasource", None)
        for query in query_context.get("queries", []):
            query.pop("datasource", None)
            query.pop("url_params", None)
        for key in VOLATILE_FORM_DATA:
            query_context.get("form_data", {}).pop(key, None)
        # Pretty-printed, so that a changed chart is a readable diff.
        config["query_context"] = json.dumps(query_context, indent=2, sort_keys=True) + "\n"
    return config


def _strip_dashboard(config: dict[str, Any]) -> dict[str, Any]:
    for node in config.get("position", {}).values():
        if isinstance(node, dict) and node.get("type") == "CHART":
            node["meta"]["chartId"] = 0
    metadata = config.get("metadata", {})
    # Chart ids again: the scopes (rootPath, excluded) say the same thing by layout.
    metadata["chart_configuration"] = {}
    # Caches the front end fills in whenever an owner opens the dashboard (the labels it has
    # shown and their colours): not part of the dashboard's definition.
    metadata["shared_label_colors"] = []
    metadata["map_label_colors"] = {}
    metadata["color_scheme_domain"] = []
    for native_filter in metadata.get("native_filter_configuration", []):
        native_filter.pop("chartsInScope", None)
        native_filter.pop("tabsInScope", None)
    return config


def _exported_assets() -> dict[str, str]:
    """Every dashboard, chart, dataset and connection, as the repository keeps them (in an app context)."""
    from superset.commands.dashboard.export import ExportDashboardsCommand
    from superset.commands.dataset.export import ExportDatasetsCommand
    from superset.connectors.sqla.models import SqlaTable
    from superset.models.dashboard import Dashboard

    from superset import db

    dashboard_ids = [i for (i,) in db.session.query(Dashboard.id)]
    dataset_ids = [i for (i,) in db.session.query(SqlaTable.id)]
    exported = list(ExportDashboardsCommand(dashboard_ids).run()) if dashboard_ids else []
    exported += list(ExportDatasetsCommand(dataset_ids).run()) if dataset_ids else []
    files: dict[str, str] = {}
    for name, content in exported:
        folder = name.split("/")[0]
        if folder not in ASSET_FOLDERS:
            continue
        config = yaml.safe_load(content())
        if folder == "databases":
            config["sqlalchemy_uri"] = PLACEHOLDER_MARTS_URI
            stem = config["database_name"]
        elif folder == "datasets":
            # The metadata database's row order depends on the history of imports.
            config["columns"].sort(key=lambda c: c["column_name"])
            config["metrics"].sort(key=lambda m: m["metric_name"])
            stem = config["table_name"]
        elif folder == "charts":
            config = _strip_chart(config)
            stem = config["slice_name"]
        else:
            config = _strip_dashboard(config)
            stem = config.get("slug") or config["dashboard_title"]
        files[f"{folder}/{_slug(stem)}.yaml"] = dump_yaml(config)
    return dict(sorted(files.items()))


def export(assets_dir: Path) -> dict[str, Any]:
    app = _app()
    with app.app_context():
        from superset.utils.core import override_user

        from superset import security_manager

        admin = security_manager.find_user(username=_env("BAGULA_SUPERSET_ADMIN_USERNAME"))
        with override_user(admin):
            files = _exported_assets()

    for folder in ASSET_FOLDERS:
        (assets_dir / folder).mkdir(parents=True, exist_ok=True)
        for stale in (assets_dir / folder).glob("*.yaml"):
            if f"{folder}/{stale.name}" not in files:
                stale.unlink()
    (assets_dir / "metadata.yaml").write_text(dump_yaml({"version": "1.0.0", "type": "assets"}))
    for name, text in files.items():
        (assets_dir / name).write_text(text)
    return {"files": sorted(files)}


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[1] not in ("init", "export", "sync-projects"):
        print(__doc__, file=sys.stderr)
        return 2
    assets_dir = Path(argv[2]).resolve()
    command = {"init": init, "export": export, "sync-projects": lambda _: sync_projects_only()}[argv[1]]
    summary = command(assets_dir)
    sys.stdout.flush()
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
