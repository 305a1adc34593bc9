"""The console as a person uses it, in headless chromium, against the whole stack.

Every field is found by its label and every button by its accessible name, so
these tests also check that the page can be used without seeing it.
"""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from playwright.async_api import expect

from tests.conftest import API_KEYS, auth
from tests.console.conftest import BrowserPage
from tests.integration.conftest import create_dataset, start_job, wait_for_job
from tests.seeds import LOCAL, SYSTEM_PROMPT, hiroyuki_csv

pytestmark = pytest.mark.slow

QUESTION = "自己肯定感の高めかた"
BASE_MODEL = "gpt-4o-mini-2024-07-18"
JOB_TIMEOUT_MS = 60_000


def trained_answer(question: str = QUESTION) -> str:
    for line in hiroyuki_csv().splitlines():
        if line.startswith(question + ","):
            return line.split(",", 1)[1]
    raise AssertionError(f"the seed has no question {question!r}")


async def sign_in(browser_page: BrowserPage, api: str, tenant: str = "tenant-a") -> Any:
    page = browser_page.page
    await page.goto(f"{api}/console")
    await expect(page.get_by_role("heading", name="Enter your API key")).to_be_visible()
    await page.get_by_label("API key", exact=True).fill(API_KEYS[tenant])
    await page.get_by_role("button", name="Continue").click()
    await expect(page.get_by_role("navigation", name="Console sections")).to_be_visible()
    return page


async def drop_file(page: Any, target: str, name: str, text: str, mime: str) -> None:
    """What a drag from the file manager delivers: a drop event carrying the file."""
    transfer = await page.evaluate_handle(
        """([name, text, mime]) => {
            const transfer = new DataTransfer();
            transfer.items.add(new File([text], name, { type: mime }));
            return transfer;
        }""",
        [name, text, mime],
    )
    await page.dispatch_event(target, "dragenter", {"dataTransfer": transfer})
    await page.dispatch_event(target, "drop", {"dataTransfer": transfer})


async def test_key_upload_train_watch_and_compare(api, worker, open_page) -> None:
    browser_page = await open_page("tenant-a")
    page = browser_page.page

    # The key prompt: a wrong key gets the API's own answer, the right one gets in.
    await page.goto(f"{api}/console")
    await page.get_by_label("API key", exact=True).fill("not-a-key-0123456789")
    await page.get_by_role("button", name="Continue").click()
    refusal = page.locator("#key-problem .problem")
    await expect(refusal).to_contain_text("Unauthorized (401)")
    await expect(refusal).to_contain_text("The API key is not valid")
    await browser_page.snapshot("1-key-refused")
    await expect(page.get_by_label("API key", exact=True)).to_be_focused()
    await page.get_by_label("API key", exact=True).fill(API_KEYS["tenant-a"])
    await page.get_by_role("button", name="Continue").click()
    await expect(page.get_by_role("heading", name="Datasets", level=2)).to_be_visible()
    assert await page.evaluate("Object.values(sessionStorage)") == [API_KEYS["tenant-a"]]
    assert await page.evaluate("Object.values(localStorage)") == []

    # Upload the seed's Q&A CSV by dropping it, with the seed's system prompt.
    datasets = page.locator("#view-datasets")
    await drop_file(page, "#dropzone", "hiroyuki.csv", hiroyuki_csv(), "text/csv")
    await expect(page.locator("#upload-chosen")).to_contain_text("hiroyuki.csv")
    await datasets.get_by_label("Name").fill("hiroyuki")
    await datasets.get_by_label("System prompt").fill(SYSTEM_PROMPT)
    await datasets.get_by_role("button", name="Upload", exact=True).click()
    await expect(page.locator("#upload-result")).to_contain_text("Stored hiroyuki")

    async with httpx.AsyncClient(base_url=api) as http:
        listed = (await http.get("/datasets", headers=auth())).json()["data"]
    assert len(listed) == 1
    dataset = listed[0]
    assert dataset["example_count"] == 29
    row = page.get_by_role("row").filter(has_text=dataset["id"])
    await expect(row).to_contain_text("ready")
    await expect(row.get_by_role("cell").nth(1)).to_have_text("29")
    await expect(row.get_by_role("cell").nth(2)).to_have_text(f"{dataset['token_count']:,}")
    await expect(row).to_contain_text("$")  # the estimated cost
    await browser_page.snapshot("2-dataset-stored")

    # Train it: the dataset and its target model are chosen for us.
    await row.get_by_role("button", name="Train a model on hiroyuki").click()
    await expect(page.get_by_role("heading", name="Jobs", level=2)).to_be_visible()
    await expect(page.get_by_label("Dataset", exact=True)).to_have_value(dataset["id"])
    await expect(page.get_by_label("Base model", exact=True)).to_have_value(BASE_MODEL)
    await page.get_by_label("Suffix").fill("hiroyuki")
    await page.get_by_role("button", name="Start job").click()

    detail = page.locator("#job-detail")
    await expect(detail.get_by_role("heading", name=re.compile(r"^Job job_"))).to_be_focused()
    job_id = (await detail.get_by_role("heading", level=3).first.inner_text()).removeprefix("Job ")
    assert re.fullmatch(r"job_\w+", job_id)

    # Live: the page alone follows the job to the end.
    await expect(page.locator("#job-summary .badge").first).to_have_text(
        "succeeded", timeout=JOB_TIMEOUT_MS
    )
    await expect(page.get_by_role("row").filter(has_text=job_id)).to_contain_text("succeeded")
    # ...and said so in its live region as it happened, without a reload.
    said = await browser_page.announcements()
    assert f"Job {job_id} is now succeeded" in said, said
    await expect(page.locator("#job-summary")).to_contain_text(f"ft:{BASE_MODEL}")
    await expect(page.locator("#job-steps")).to_be_visible()

    # The loss curve, drawn from /metrics, plus checkpoints and the timeline.
    chart = page.get_by_role("img", name=re.compile("Loss by training step"))
    await expect(chart).to_be_visible()
    curve = page.locator("#job-chart path.series-train")
    await expect(curve).to_have_attribute("data-points", re.compile(r"^[1-9]\d+$"))
    assert (await curve.get_attribute("d") or "").count("L") >= 9
    await expect(page.get_by_role("table", name="Checkpoints, latest step first")).to_be_visible()
    assert await page.locator("#job-events .timeline li").count() >= 4
    await expect(page.get_by_role("button", name="Cancel job")).to_have_count(0)
    await browser_page.snapshot("3-job-succeeded")

    # Chat: the tuned model and its base answer side by side, streamed.
    await page.get_by_role("link", name="Chat with this model").click()
    await expect(page.get_by_role("heading", name="Chat", level=2)).to_be_visible()
    await expect(page.get_by_label("Tuned model", exact=True)).to_have_value(job_id)
    await expect(page.locator("#chat-base")).to_contain_text(BASE_MODEL)
    await page.get_by_label("Question", exact=True).fill(QUESTION)
    await page.get_by_role("button", name="Ask both").click()
    turn = page.locator(".turn").first
    tuned = turn.locator(".answer[data-role=tuned]")
    base = turn.locator(".answer[data-role=base]")
    await expect(tuned).to_have_class(re.compile(r"\bdone\b"))
    await expect(base).to_have_class(re.compile(r"\bdone\b"))
    await expect(page.locator("#announcer")).to_have_text("Both answers are complete.")
    await expect(tuned.locator(".answer-text")).to_have_text(trained_answer())
    await expect(tuned.locator(".answer-text")).to_have_attribute("aria-live", "polite")
    await expect(base.locator(".answer-text")).to_contain_text("not been trained on your data")
    await expect(tuned.get_by_role("heading")).to_contain_text("ft:")
    await expect(base.get_by_role("heading")).to_contain_text(BASE_MODEL)
    await browser_page.snapshot("4-chat-side-by-side")
    left, right = await tuned.bounding_box(), await base.bounding_box()
    assert left
    assert right
    assert abs(left["y"] - right["y"]) < 2
    assert left["x"] + left["width"] <= right["x"]

    # A narrow screen: nothing runs off the side, and the answers stack.
    await page.set_viewport_size({"width": 375, "height": 800})
    for view in ("chat", "jobs", "datasets"):
        await page.get_by_role("link", name=view.capitalize(), exact=True).click()
        await expect(page.locator(f"#view-{view}")).to_be_visible()
        overflow = await page.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0, f"{view} is {overflow}px wider than a 375px screen"
        await browser_page.snapshot(f"5-narrow-{view}")
    await page.get_by_role("link", name="Chat", exact=True).click()
    top, below = await tuned.bounding_box(), await base.bounding_box()
    assert top
    assert below
    assert top["y"] + top["height"] <= below["y"]

    # The key outlives a reload of the tab, and "Forget key" drops it.
    await page.reload()
    await expect(page.get_by_role("navigation", name="Console sections")).to_be_visible()
    await page.get_by_role("button", name="Forget key").click()
    await expect(page.get_by_role("heading", name="Enter your API key")).to_be_visible()
    assert await page.evaluate("sessionStorage.length") == 0


async def test_validation_errors_are_shown_line_by_line(api, open_page) -> None:
    browser_page = await open_page()
    page = await sign_in(browser_page, api)
    datasets = page.locator("#view-datasets")
    rows = ["user,assistant"] + [f"question {i},answer {i}" for i in range(12)]
    rows[3] = "question 2,"  # line 4: no answer
    rows[6] = ",answer 5"  # line 7: no question
    # The keyboard path: the labelled file input.
    await datasets.get_by_label("File", exact=True).set_input_files(
        files=[{"name": "broken.csv", "mimeType": "text/csv", "buffer": "\n".join(rows).encode()}]
    )
    await datasets.get_by_role("button", name="Upload", exact=True).click()
    problem = page.locator("#upload-result .problem")
    await expect(problem).to_contain_text("Upload refused: Unprocessable content (422)")
    issues = problem.get_by_role("table", name=re.compile("Problems found"))
    await expect(issues.get_by_role("row").filter(has_text="assistant")).to_contain_text("4")
    await expect(issues.get_by_role("row").filter(has_text="user")).to_contain_text("7")
    await expect(problem).to_contain_text("missing_content")
    await expect(problem).to_contain_text("urn:request:")
    await browser_page.snapshot("validation-errors")

    # Too few examples: a problem of the whole file, in the API's words.
    await datasets.get_by_label("File", exact=True).set_input_files(
        str(LOCAL / "three_examples.jsonl")
    )
    await datasets.get_by_role("button", name="Upload", exact=True).click()
    await expect(problem).to_contain_text("whole file")
    await expect(problem).to_contain_text("at least 10")

    # A dry run stores nothing and says so.
    await datasets.get_by_label("File", exact=True).set_input_files(
        files=[{"name": "ok.csv", "mimeType": "text/csv", "buffer": hiroyuki_csv().encode()}]
    )
    await datasets.get_by_role("button", name="Check only").click()
    await expect(page.locator("#upload-result")).to_contain_text("nothing was stored")
    await expect(page.locator("#datasets-list")).to_contain_text("No datasets yet")


async def test_another_tenants_key_shows_none_of_the_first_tenants_data(
    api, worker, open_page
) -> None:
    async with httpx.AsyncClient(base_url=api, timeout=30) as http:
        dataset = await create_dataset(http)
        job = await start_job(http, dataset["id"])
        job = await wait_for_job(http, job["id"], {"succeeded"})

    owner = await sign_in(await open_page("tenant-a"), api, "tenant-a")
    await expect(owner.locator("#datasets-list")).to_contain_text(dataset["id"])

    other = await sign_in(await open_page("tenant-b"), api, "tenant-b")
    await expect(other.locator("#datasets-list")).to_contain_text("No datasets yet")
    await other.get_by_role("link", name="Jobs", exact=True).click()
    await expect(other.locator("#jobs-list")).to_contain_text("No jobs yet")
    await expect(other.get_by_label("Dataset", exact=True)).to_be_disabled()
    await other.get_by_role("link", name="Chat", exact=True).click()
    await expect(other.locator("#chat-problem")).to_contain_text("No tuned model yet")
    await expect(other.get_by_role("button", name="Ask both")).to_be_disabled()

    # Even the first tenant's job id, typed in: the API's 404, nothing else.
    await other.goto(f"{api}/console#jobs/{job['id']}")
    detail = other.locator("#job-detail")
    await expect(detail.locator(".problem")).to_contain_text("Not found (404)")
    await expect(detail.locator("#job-summary")).to_be_empty()
    html = await other.content()
    for secret in (dataset["name"], job["fine_tuned_model"], dataset["id"]):
        assert secret not in html


async def test_cancel_a_job_from_the_page(api, open_page) -> None:
    # No worker runs here, so the job waits in `pending` until it is cancelled.
    async with httpx.AsyncClient(base_url=api, timeout=30) as http:
        dataset = await create_dataset(http)
        job = await start_job(http, dataset["id"])
    page = await sign_in(await open_page(), api)
    await page.goto(f"{api}/console#jobs/{job['id']}")
    await expect(page.locator("#job-summary .badge").first).to_have_text("pending")
    page.once("dialog", lambda dialog: dialog.accept())
    await page.get_by_role("button", name="Cancel job").click()
    await expect(page.locator("#job-summary .badge").first).to_have_text("cancelled")
    await expect(page.get_by_role("row").filter(has_text=job["id"])).to_contain_text("cancelled")
    await expect(page.get_by_role("button", name="Cancel job")).to_have_count(0)
    await expect(page.locator("#job-events")).to_contain_text("Cancelled")
    # The stages say how it really went: accepted, then cancelled, nothing between.
    stages = page.get_by_role("list", name="Stages").get_by_role("listitem")
    await expect(stages).to_have_text(["pending (done)", "cancelled"])


async def test_no_key_prompt_when_auth_is_disabled(open_page, env, monkeypatch) -> None:
    from service.settings import load_settings
    from tests.conftest import running_api

    for name, value in {**env, "AUTH_DISABLED": "true"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("SERVICE_API_KEYS", raising=False)
    with running_api(load_settings()) as (base_url, _app):
        browser_page = await open_page()
        page = browser_page.page
        await page.goto(f"{base_url}/console")
        await expect(page.get_by_role("heading", name="Datasets", level=2)).to_be_visible()
        await expect(page.locator("#session")).to_contain_text("Authentication is off")
        await expect(page.get_by_role("heading", name="Enter your API key")).to_be_hidden()
        await expect(page.get_by_role("button", name="Forget key")).to_be_hidden()


async def test_evaluate_a_tuned_model_and_read_its_scores(api, worker, open_page) -> None:
    async with httpx.AsyncClient(base_url=api, timeout=30) as http:
        dataset = await create_dataset(http)
        job = await start_job(http, dataset["id"])
        job = await wait_for_job(http, job["id"], {"succeeded"})
    page = await sign_in(await open_page(), api)
    await page.get_by_role("link", name="Evaluations").click()
    await expect(page.get_by_label("Model to evaluate")).to_have_value(job["id"])
    await page.get_by_label("Questions from").select_option(dataset["id"])
    await page.get_by_label("Examples (optional)").fill("10")
    await page.get_by_role("button", name="Start evaluation").click()
    summary = page.locator("#evaluation-summary")
    await expect(summary.locator(".badge").first).to_have_text("succeeded", timeout=JOB_TIMEOUT_MS)
    scores = page.get_by_role("table", name="Scores: mean and 95% interval")
    tuned_row = scores.get_by_role("row").filter(has_text=job["fine_tuned_model"])
    await expect(tuned_row).to_contain_text("1.00")
    await expect(summary).to_contain_text("win rate 1.00")
    examples = page.get_by_role("table", name=re.compile("Examples in dataset order"))
    await expect(examples.get_by_role("row")).to_have_count(11)
    await expect(examples).to_contain_text(trained_answer())
