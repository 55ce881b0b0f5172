"""The one page: pick or drop a folder, watch it upload, poll the job, read the results."""
from __future__ import annotations

from flask import Blueprint, render_template

pages = Blueprint("pages", __name__)


@pages.get("/")
def index():
    return render_template("index.html")
