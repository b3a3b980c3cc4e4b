"""The conversation service: runs the pure flow for one event at a time per user, reads the facts it
needs from storage, carries out its effects (storage, blob store, queue, downloads) and feeds the
follow-up events back through the flow.

Adapters call :meth:`ConversationService.handle` with a platform-neutral event and show the replies
it returns. Results and progress from the workers arrive through :meth:`on_outcome` and
:meth:`on_progress`, and go out through the :class:`Notifier` registered for the run's platform.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import secrets
import weakref
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from typing import Protocol

from bot.core import effects as fx
from bot.core import events as ev
from bot.core import texts
from bot.core.flow import Decision, decide, results_shown_instead
from bot.core.limits import Limits
from bot.core.replies import EditProgress, Reply, Text
from bot.core.state import Facts, ModelState, RunInfo, StyleInfo, UserState
from bot.queue import JobQueue, QueueUnreachable
from pipeline import jobs
from pipeline.lora_files import InvalidLoraFile, validate_lora_file
from pipeline.recipe import FACECHAIN
from storage.blobs import BlobNotFound, BlobStore, NotAnImage
from storage.keys import community_style_key, photo_key
from storage.models import (
    Community,
    CommunitySnapshot,
    Delivery,
    ModelStatus,
    PhotoSetStatus,
    Platform,
    ResultsTo,
    Run,
    RunKind,
    RunStatus,
)
from storage.repositories import Repositories

log = logging.getLogger("facechain.service")

Downloader = Callable[[ev.OfferedFile], Awaitable[bytes]]


class DownloadError(Exception):
    """An adapter could not fetch a file (too large for the platform, gone, network)."""

    def __init__(self, reason: str = "download_failed", *, limit: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        #: For "too_large": the size the platform hands over, where it is below the bot's own limit.
        self.limit = limit


@dataclass(frozen=True, slots=True)
class Origin:
    """Who sent an event, and from where. Filled in by the adapter."""

    platform: Platform
    user_id: str
    chat_id: str
    private: bool
    display_name: str = ""
    #: The group or server id; None in a private chat, unless a button there acts for a community the
    #: sender belongs to (portraits a server sent to their DMs): see :meth:`Origin.acting_for`.
    community_id: str | None = None
    #: The adapter checked with the platform that the sender administers the community.
    is_admin: bool = False
    #: Where a "results go to DMs" community sends portraits for this user (adapter-specific id).
    direct_chat_id: str | None = None
    #: The platform marks this chat age-restricted (a Discord NSFW channel); None where the platform
    #: has no such mark. A community's NSFW switch is honoured only where this is not False.
    age_restricted: bool | None = None

    def acting_for(self, community_id: str) -> Origin:
        """This private chat, for a press of a button of ``community_id``'s: its styles and limits apply,
        and results come here. Only for a sender the adapter found to be a member there."""
        return replace(self, community_id=community_id, is_admin=False, direct_chat_id=None)


@dataclass(frozen=True, slots=True)
class StyleEntry:
    """A style the service can offer: its description, whether it is on by default, and its spec."""

    spec: jobs.StyleSpec
    description: str = ""
    default_enabled: bool = True
    #: Blob key of the style's preview picture (see :func:`bot.styles.load_catalog`).
    preview_key: str | None = None


class DeliveryRefused(Exception):
    """The chat refuses the bot for good (the user blocked it, closed their DMs, or the chat is gone):
    sending again later would not help."""


class Notifier(Protocol):
    """Sends replies to a chat outside an adapter's own event handling (progress and results)."""

    async def deliver(self, delivery: Delivery, replies: Sequence[Reply]) -> Mapping[str, str]:
        """Show the replies; return run_id → message id for every ProgressMessage sent.

        Raises :class:`DeliveryRefused` when the chat refuses the bot, and any other exception when a
        reply could not be sent for a reason that may pass (the platform unreachable, its server
        erring, flood control longer than the sender waits): the outcome is then delivered again later.
        A reply the platform rejects as such (a bad request) is logged and skipped.
        """
        ...


@dataclass(slots=True)
class _Place:
    """Where one event and its follow-ups happen: the origin, and its community as last read."""

    origin: Origin
    community: CommunitySnapshot | None = None
    #: Progress messages of runs that are gone from storage by the end of the event (forgotten).
    progress_at: dict[str, tuple[str, str]] = field(default_factory=dict)


#: Effects that change nothing a community snapshot holds (its settings, styles, usage counts):
#: after them the event's community is not read again. Any other effect makes it stale.
_USER_ONLY_EFFECTS = (
    fx.StartCollecting, fx.SavePhotos, fx.DiscardPhotos, fx.ReopenSet, fx.StartTraining, fx.StartGeneration,
    fx.CancelRuns,
)  # fmt: skip


class ConversationService:
    """Event in, replies out; one event at a time per user, any number of users at once."""

    def __init__(
        self,
        repos: Repositories,
        blobs: BlobStore,
        queue: JobQueue,
        styles: Mapping[str, StyleEntry],
        limits: Limits,
        *,
        candidates: int = 10,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._repos = repos
        self._blobs = blobs
        self._queue = queue
        self._styles = dict(styles)
        self._limits = limits
        self._candidates = candidates
        self._clock = clock
        self._locks: weakref.WeakValueDictionary[int, asyncio.Lock] = weakref.WeakValueDictionary()
        #: Per community: its daily limit is checked and a run created under one lock (members ask at once).
        self._community_locks: weakref.WeakValueDictionary[int, asyncio.Lock] = weakref.WeakValueDictionary()
        self._notifiers: dict[Platform, Notifier] = {}
        #: Runs whose result is being sent right now (a duplicate outcome must not send it twice).
        self._delivering: set[str] = set()

    # ------------------------------------------------------------------------------- public API
    def register_notifier(self, platform: Platform, notifier: Notifier) -> None:
        self._notifiers[platform] = notifier

    async def handle(self, origin: Origin, event: ev.Event, download: Downloader | None = None) -> list[Reply]:
        """Run one event (and the follow-ups its effects produce) for the sender; return the replies."""
        if not origin.private and isinstance(event, ev.TextMessage):
            # Group chatter is never answered: don't create a user record for every bystander.
            return []
        user = await self._repos.users.get_or_create(origin.platform, origin.user_id, origin.display_name)
        async with self._lock(user.id):
            return await self._run(user.id, origin, event, download)

    async def answer(self, origin: Origin, event: ev.Event, download: Downloader | None = None) -> list[Reply]:
        """:meth:`handle` for an adapter: a failure inside is logged and answered with the internal-error
        text, so a chat user is never left without an answer."""
        try:
            return await self.handle(origin, event, download)
        except Exception:
            log.exception("the conversation service failed on a %s", type(event).__name__)
            return [Text(texts.error_reason(jobs.ErrorCode.INTERNAL))]

    async def styles_for(self, origin: Origin, *, every: bool = False) -> tuple[StyleInfo, ...]:
        """The styles enabled where ``origin`` is (or every style known there): for an adapter's autocomplete.

        The flow is not involved and no user state is touched (the community row may be created).
        """
        enabled, known = self._available_styles(await self._community(_Place(origin)))
        return known if every else enabled

    async def training_now(self, origin: Origin) -> bool:
        """Whether the sender's face model is training now: an adapter that would open a photo upload
        window (Discord's /train) lets the core answer instead."""
        user = await self._repos.users.find(origin.platform, origin.user_id)
        if user is None:
            return False
        return any(run.kind is RunKind.TRAIN for run in await self._repos.runs.active(user.id))

    async def cancel_run(self, origin: Origin, run_id: str) -> bool:
        """Stop one of the sender's runs that nothing could be shown of where it was asked (an adapter
        found the channel closed to the bot, and tells the user itself). False when the run is not
        theirs or has ended."""
        user = await self._repos.users.find(origin.platform, origin.user_id)
        if user is None:
            return False
        async with self._lock(user.id):
            run = await self._repos.runs.get(run_id)
            if run is None or run.user_id != user.id or not run.status.active:
                return False
            return await self._cancel(run) is not None

    async def chat_moved(self, platform: Platform, old_chat_id: str, new_chat_id: str) -> None:
        """A group chat got a new id (a Telegram group became a supergroup): its community's settings,
        styles and counts, and the results of runs in flight, follow it."""
        moved = await self._repos.communities.move(platform, old_chat_id, new_chat_id)
        runs = await self._repos.runs.move_chat(platform, old_chat_id, new_chat_id)
        log.info("chat %s is now %s: community %s, %d active run(s) moved", old_chat_id, new_chat_id,
                 "moved" if moved else "not moved (none, or the new chat has one)", runs)  # fmt: skip

    async def note_progress_message(self, run_id: str, message_id: str) -> None:
        """An adapter sent a ProgressMessage for a run: remember it, so later edits find it."""
        await self._repos.runs.set_progress_message(run_id, message_id)

    async def on_progress(self, note: jobs.Progress) -> None:
        """A progress note from a worker (lossy): record it and edit the run's progress message."""
        run = await self._repos.runs.get(note.run_id)
        if run is None or not run.status.active:
            return
        # Also moves a queued run to running: the first note means a worker took it.
        await self._repos.runs.update_progress(run.id, note.stage.value, note.fraction)
        # A progress note only rewords the run's own message: the flow needs neither the user's lock
        # nor the full facts for it (reading them cost ~15 queries a note, several notes a second).
        decision = decide(await self._state(run.user_id), ev.JobProgress(progress=note), Facts(limits=self._limits))
        await self._notify(run, decision.replies)

    async def on_outcome(self, outcome: jobs.TrainOutcome | jobs.GenerateOutcome) -> None:
        """A run's outcome arrived on the bot's queue. Safe to call twice for the same run."""
        run = await self._repos.runs.get(outcome.run_id)
        if run is None:
            # The user was forgotten while the run was in flight: remove what the worker wrote.
            log.info("outcome for unknown run %s: deleting its outputs", outcome.run_id)
            await asyncio.to_thread(self._blobs.delete_prefix, jobs.run_prefix(outcome.run_id))
            await self._forget_run_keys([outcome.run_id], ended=True)
            return
        if outcome.kind != run.kind.value:
            log.warning("a %s outcome for %s run %s dropped", outcome.kind, run.kind.value, run.id)
            return
        async with self._lock(run.user_id):
            fresh = await self._repos.runs.get(run.id)
            if fresh is None:
                return
            if fresh.status.active:
                if isinstance(outcome, jobs.TrainOutcome):
                    await self._record_training(fresh, outcome)
                else:
                    await self._record_generation(fresh, outcome)
            elif fresh.delivered_at is not None or fresh.id in self._delivering:
                log.info("outcome for run %s already delivered", run.id)
                if fresh.status is RunStatus.CANCELLED and outcome.error is None:
                    # It finished as the user cancelled it: nobody will ever use what it made.
                    await asyncio.to_thread(self._blobs.delete_prefix, jobs.run_prefix(fresh.id))
                return
            # Ended but not delivered: a retry after a failed send shows it again.
            self._delivering.add(fresh.id)
            origin = await self._origin_of(fresh)
            replies = await self._run(fresh.user_id, origin, ev.JobFinished(outcome=outcome, style=fresh.style), None)
        try:
            # A failure to send raises: arq retries the outcome job and the user still gets the result.
            try:
                await self._notify(fresh, replies)
            except DeliveryRefused as refused:
                await self._after_refusal(fresh, replies, refused)
            await self._repos.runs.mark_delivered(fresh.id)
        finally:
            self._delivering.discard(fresh.id)

    async def delivery_given_up(self, run_id: str) -> None:
        """The outcome of ``run_id`` could not be shown after every try (the platform erred for half an
        hour): portraits nobody saw are not charged, and the run counts as handled, so a late copy of
        its outcome is not sent hours later."""
        run = await self._repos.runs.get(run_id)
        if run is None:
            return
        async with self._lock(run.user_id):
            fresh = await self._repos.runs.get(run_id)
            if fresh is None or fresh.delivered_at is not None or fresh.status.active:
                return
            await self._refund(fresh)
            await self._repos.runs.mark_delivered(run_id)

    async def _after_refusal(self, run: Run, replies: Sequence[Reply], refused: DeliveryRefused) -> None:
        """The result's chat refuses the bot. A result meant for the user's private chat is shown where
        they asked for it instead, with a note saying why; elsewhere nobody can be told: it is logged, and
        portraits nobody saw are not charged."""
        asked_in = run.delivery.asked_in_chat_id
        if asked_in is None:
            log.warning("run %s: its chat refuses the bot (%s); the result is not shown", run.id, refused)
            await self._refund(run)
            return
        log.info(
            "run %s: the private chat refuses the bot (%s); showing the result where it was asked", run.id, refused
        )
        identities = await self._repos.users.identities(run.user_id)
        name = next((i.display_name for i in identities if i.platform is run.delivery.platform), "")
        shown = results_shown_instead(replies, name)
        where = replace(run.delivery, chat_id=asked_in, asked_in_chat_id=None)
        notifier = self._notifiers[run.delivery.platform]
        try:
            await notifier.deliver(where, shown)
        except DeliveryRefused as again:
            log.warning("run %s: neither chat accepts the result (%s); it is not shown", run.id, again)
            await self._refund(run)

    async def _refund(self, run: Run) -> None:
        """Take back the charge of a run whose portraits never reached the user."""
        ended = await self._repos.runs.get(run.id)  # ``run`` may have been read before its outcome was recorded
        if ended is not None and ended.kind is RunKind.GENERATE and ended.status is RunStatus.DONE:
            await self._repos.usage.increment(ended.user_id, ended.delivery.community_id, _charge_day(ended), n=-1)

    # ------------------------------------------------------------------ for the run supervisor
    async def active_runs(self) -> list[Run]:
        """Every queued and running run, oldest first."""
        return await self._repos.runs.active_all()

    async def recently_cancelled(self) -> list[Run]:
        """Runs cancelled within a day (as long as arq keeps a job): their jobs may still wait in Redis
        if the cancel met Redis down and the bot restarted before it was sent."""
        return await self._repos.runs.cancelled_since(self._clock() - timedelta(days=1))

    async def stored_outcome(self, run: Run) -> jobs.TrainOutcome | jobs.GenerateOutcome | None:
        """The outcome a worker left as the run's done marker, if it finished one (None: it did not)."""
        try:
            data = await asyncio.to_thread(self._blobs.get_bytes, jobs.outcome_key(run.id))
        except BlobNotFound:
            return None
        try:
            return jobs.parse_outcome_json(data)
        except ValueError:
            log.warning("run %s: its done marker is unreadable; ignored", run.id)
            return None

    async def restart_run(self, run: Run, max_attempts: int) -> int | None:
        """Submit a run whose worker was lost again, as its next attempt, and tell the user in its
        progress message. Returns the new attempt; None when the run ended or restarted meanwhile.

        Raises :class:`~bot.queue.QueueUnreachable` when Redis went away before the submit: the run
        is then queued in the database only, and the supervisor finds its job missing again.
        """
        if run.request is None:
            raise ValueError(f"run {run.id} has no stored request")
        request = jobs.parse_request(json.loads(run.request))
        async with self._lock(run.user_id):
            attempt = await self._repos.runs.restart(run.id, run.attempt)
        if attempt is None:
            return None
        await self._queue.submit(request, attempt)
        log.info("run %s restarted as attempt %d of %d", run.id, attempt, max_attempts)
        event = ev.RunRestarted(run_id=run.id, attempt=attempt, max_attempts=max_attempts)
        decision = decide(await self._state(run.user_id), event, Facts(limits=self._limits))
        try:
            await self._notify(run, decision.replies)
        except Exception as exc:  # a lost progress edit is no reason to stop watching runs
            log.info("run %s: the restart note was not shown (%s)", run.id, exc)
        return attempt

    # ------------------------------------------------------------------------------ the loop
    def _lock(self, user_id: int) -> asyncio.Lock:
        return _lock_of(self._locks, user_id)

    async def _run(self, user_id: int, origin: Origin, event: ev.Event, download: Downloader | None) -> list[Reply]:
        replies: list[Reply] = []
        pending: list[ev.Event] = [event]
        place = _Place(origin)
        # The state and facts the next event is decided on; None: read them (again) from storage.
        known: tuple[UserState, Facts] | None = None
        while pending:
            current = pending.pop(0)
            if known is None:
                known = await self._read(user_id, place)
            state, facts = known
            decision: Decision = decide(state, current, facts)
            if decision.state != state:
                await self._repos.conversations.set_state(user_id, decision.state.to_json())
            # What a re-read would give, as long as no effect wrote anything.
            known = (decision.state, facts)
            replies.extend(decision.replies)
            for effect in decision.effects:
                pending.extend(await self._apply(user_id, place, effect, download))
                known = None
                if not isinstance(effect, _USER_ONLY_EFFECTS):
                    place.community = None
        return await self._locate_progress(replies, place)

    async def _locate_progress(self, replies: Sequence[Reply], place: _Place) -> list[Reply]:
        """The replies, each progress edit with where its message is stored: the adapter that sent the
        message may have restarted since, or the edit may come from another chat (/cancel)."""
        wanted = {r.run_id for r in replies if isinstance(r, EditProgress) and r.run_id not in place.progress_at}
        stored = {run.id: _progress_at(run) for run in await self._repos.runs.get_many(sorted(wanted))}
        where = {**stored, **place.progress_at}
        return [
            replace(reply, stored_at=where.get(reply.run_id)) if isinstance(reply, EditProgress) else reply
            for reply in replies
        ]

    async def _state(self, user_id: int) -> UserState:
        return UserState.from_json(await self._repos.conversations.get_state(user_id))

    async def _read(self, user_id: int, place: _Place) -> tuple[UserState, Facts]:
        """The user's state and the facts for one event: one statement (two in a community)."""
        origin = place.origin
        snapshot = await self._community(place)
        community = snapshot.community if snapshot else None
        today = self._today()
        user = await self._repos.snapshots.user(user_id, today, community.id if community else None)
        enabled, every = self._available_styles(snapshot)
        infos = []
        for run in user.active_runs:
            position = None
            if run.status is RunStatus.QUEUED:
                position = await self._queue.position(run.kind.value, run.id, run.attempt)
            infos.append(RunInfo(run.id, run.kind.value, run.status.value, run.progress, position, run.style))
        # Runs in flight count too: they will be charged, and the limit is for the day. A community's own
        # limit for its members counts their runs there; the bot's own counts a person's runs everywhere.
        generating = [r for r in user.active_runs if r.kind is RunKind.GENERATE]
        if community is not None and community.user_daily_quota is not None:
            user_quota: int | None = community.user_daily_quota
            used = user.generations_today + sum(1 for r in generating if r.delivery.community_id == community.id)
        else:
            user_quota = self._limits.daily_generations
            used = user.generations_everywhere + len(generating)
        facts = Facts(
            limits=self._limits,
            private=origin.private,
            community=origin.community_id,
            is_admin=origin.is_admin,
            model=_model_state(user.model_status),
            has_ready_model=user.has_ready_model,
            photo_count=user.photo_count,
            photo_keys=user.photo_keys,
            styles=enabled,
            all_styles=every,
            active_runs=tuple(infos),
            generations_today=used,
            user_quota=user_quota,
            # Runs in flight count too: they will be charged, and the limit is for the day.
            community_generations_today=snapshot.generations_today + snapshot.active_generations if snapshot else 0,
            community_quota=community.community_daily_quota if community else None,
            results_to=community.results_to.value if community else ResultsTo.CHANNEL.value,
            nsfw_allowed=community.nsfw_allowed if community else False,
            age_restricted=origin.age_restricted,
        )
        return UserState.from_json(user.state), facts

    async def _community(self, place: _Place) -> CommunitySnapshot | None:
        """The community the event came from (None in a private chat), read once per event."""
        origin = place.origin
        if origin.community_id is None:
            return None
        if place.community is None:
            place.community = await self._repos.snapshots.community(origin.platform, origin.community_id, self._today())
        return place.community

    def _available_styles(
        self, snapshot: CommunitySnapshot | None
    ) -> tuple[tuple[StyleInfo, ...], tuple[StyleInfo, ...]]:
        """(enabled here, every style known here). Every style: built-ins in catalogue order, then the
        community's. Enabled: the community's choices first (its own styles, then built-ins it switched
        on), so the style picker's few buttons show them; then the rest in that order."""
        candidates = [
            (StyleInfo(n, e.description, builtin=True, preview=e.preview_key), e.default_enabled)
            for n, e in self._styles.items()
        ]
        community = snapshot.community if snapshot is not None else None
        if snapshot is not None:
            for custom in snapshot.custom_styles:
                candidates.append((StyleInfo(custom.name, _describe_custom(custom.prompt)), True))
        chosen: list[StyleInfo] = []
        enabled: list[StyleInfo] = []
        for info, on in candidates:
            picked = community is not None and (not info.builtin or (not on and info.name in community.enabled_styles))
            if community is not None:
                on = (on or info.name in community.enabled_styles) and info.name not in community.disabled_styles
            if on:
                (chosen if picked else enabled).append(info)
        chosen.sort(key=lambda info: info.builtin)  # its own styles, then the built-ins it switched on
        return (*chosen, *enabled), tuple(info for info, _ in candidates)

    def _today(self) -> date:
        return self._clock().astimezone(UTC).date()

    # ---------------------------------------------------------------------------------- effects
    async def _apply(
        self, user_id: int, place: _Place, effect: fx.Effect, download: Downloader | None
    ) -> list[ev.Event]:
        """Carry out one effect; return the follow-up events it produces."""
        repos = self._repos
        match effect:
            case fx.StartCollecting():
                current = await repos.photos.current_set(user_id)
                if current is not None:
                    await self._delete_blobs(await repos.photos.discard_set(current.id))
                await repos.photos.open_set(user_id)
            case fx.SavePhotos(files=files, numbers=numbers):
                return [await self._save_photos(user_id, files, numbers, download)]
            case fx.DiscardPhotos():
                current = await repos.photos.current_set(user_id)
                if current is not None:
                    await self._delete_blobs(await repos.photos.discard_set(current.id))
            case fx.ReopenSet(drop_keys=drop):
                await self._reopen_set(user_id, drop)
            case fx.StartTraining(subject=subject):
                return _some(await self._start_training(user_id, place, subject))
            case fx.StartGeneration(style=style, count=count):
                return _some(await self._start_generation(user_id, place, style, count))
            case fx.CancelRuns():
                asked, closed = await self._cancel_runs(user_id)
                # Runs taken off the queue get no outcome from a worker: finish them here.
                return [ev.RunsCancelled(run_ids=asked), *closed]
            case fx.ForgetUser():
                active = await repos.runs.active(user_id)
                place.progress_at.update((run.id, at) for run in active if (at := _progress_at(run)) is not None)
                await self._cancel_runs(user_id)
                await self._forget_run_keys(await repos.forget_user(user_id, self._blobs))
                if active:
                    return [ev.RunsForgotten(runs=tuple((run.id, run.kind.value) for run in active))]
            case fx.SetStyleEnabled(style=style, enabled=enabled):
                community = await self._require_community(place)
                await repos.communities.set_style_enabled(community.id, style, enabled)
            case fx.AddStyle(name=name, prompt=prompt, lora=lora):
                return [await self._add_style(user_id, place, name, prompt, lora, download)]
            case fx.RemoveStyle(name=name):
                community = await self._require_community(place)
                removed = await repos.communities.remove_custom_style(community.id, name)
                if removed is not None and removed.lora_key:
                    await self._release_style_file(removed.lora_key)
            case fx.SetQuota(scope="user" | "group" as scope, limit=limit):
                community = await self._require_community(place)
                await repos.communities.set_quota(community.id, scope, limit)
            case fx.SetCommunityOption(name=name, value=value):
                community = await self._require_community(place)
                if name == "results_to":
                    await repos.communities.set_results_to(community.id, ResultsTo(value))
                elif name == "nsfw":
                    await repos.communities.set_nsfw_allowed(community.id, value == "on")
                else:
                    raise ValueError(f"unknown community option {name!r}")
        return []

    async def _forget_run_keys(self, run_ids: Sequence[str], *, ended: bool = False) -> None:
        """Delete the queue's keys of forgotten runs; a Redis failure leaves them to expire (logged)."""
        try:
            await self._queue.forget(run_ids, ended=ended)
        except Exception as exc:
            log.warning("the queue's keys of %d forgotten run(s) stay until they expire: %s", len(run_ids), exc)

    async def _require_community(self, place: _Place) -> Community:
        snapshot = await self._community(place)
        if snapshot is None:
            raise RuntimeError("admin effect outside a community")
        return snapshot.community

    async def _save_photos(
        self, user_id: int, files: Sequence[ev.OfferedFile], numbers: Sequence[int], download: Downloader | None
    ) -> ev.PhotosSaved:
        photo_set, count = await self._repos.photos.open_set_with_count(user_id)
        results: list[ev.SavedPhoto] = []
        for index, offered in enumerate(files):
            number = numbers[index] if index < len(numbers) else index + 1
            refused = functools.partial(ev.SavedPhoto, offered.ref, False, filename=offered.filename, number=number)
            if count >= self._limits.max_photos:
                results.append(refused("set_full"))
                continue
            if download is None:
                results.append(refused("download_failed"))
                continue
            try:
                data = await download(offered)
            except DownloadError as exc:
                results.append(refused(exc.reason, limit=exc.limit))
                continue
            if len(data) > self._limits.max_photo_bytes:
                results.append(refused("too_large"))
                continue
            key = photo_key(user_id, f"{photo_set.id}/{_token()}")
            try:
                stored = await asyncio.to_thread(self._blobs.put_photo, key, data)
            except NotAnImage:
                results.append(refused(jobs.RejectReason.NOT_AN_IMAGE.value))
                continue
            photo = await self._repos.photos.add_photo(
                photo_set.id, user_id, stored.key, stored.sha256, stored.size, stored.width,
                stored.height, stored.mime,
            )  # fmt: skip
            if photo is None:
                await asyncio.to_thread(self._blobs.delete, stored.key)
                results.append(refused(jobs.RejectReason.DUPLICATE.value))
                continue
            count += 1
            results.append(ev.SavedPhoto(offered.ref, True, filename=offered.filename, number=number))
        return ev.PhotosSaved(results=tuple(results), total=count)

    async def _reopen_set(self, user_id: int, drop: Sequence[str]) -> None:
        latest = await self._repos.models.latest(user_id)
        if latest is None or latest.photo_set_id is None:
            return
        if await self._repos.photos.current_set(user_id) is not None:
            return
        await self._repos.photos.remove_photos(latest.photo_set_id, list(drop))
        await self._delete_blobs(list(drop))
        await self._repos.photos.set_status(latest.photo_set_id, PhotoSetStatus.COLLECTING)

    async def _start_training(self, user_id: int, place: _Place, subject: jobs.Subject) -> ev.Event | None:
        photo_set = await self._repos.photos.current_set(user_id)
        if photo_set is None:
            return None
        if not await self._queue.available():
            return ev.QueueUnavailable(kind="train")
        photos = await self._repos.photos.photos(photo_set.id)
        await self._repos.photos.set_status(photo_set.id, PhotoSetStatus.SUBMITTED)
        model = await self._repos.models.create(user_id, photo_set.id, subject.value)
        run_id = _new_run_id("t")
        snapshot = await self._community(place)
        delivery = self._delivery(place.origin, snapshot.community if snapshot else None, private_result=True)
        request = jobs.TrainRequest(
            run_id=run_id,
            user_id=user_id,
            model_id=model.id,
            photo_keys=[p.blob_key for p in photos],
            subject=subject,
            min_photos=self._limits.min_photos,
        )
        run = await self._repos.runs.create(
            run_id, user_id, RunKind.TRAIN, delivery, model_id=model.id, request=request.model_dump_json()
        )
        position = await self._submit(request, run.attempt)
        return ev.RunQueued(run_id=run_id, kind="train", queue_position=position)

    async def _start_generation(self, user_id: int, place: _Place, style: str, count: int) -> ev.Event | None:
        origin = place.origin
        model = await self._repos.models.latest_ready(user_id)
        entry = await self._style_entry(place, style)
        if model is None or entry is None or model.lora_key is None:
            log.warning("generation refused late for user %s (model or style vanished)", user_id)
            return None
        if not await self._queue.available():
            return ev.QueueUnavailable(kind="generate")
        snapshot = await self._community(place)
        community = snapshot.community if snapshot else None
        run_id = _new_run_id("g")
        delivery = self._delivery(
            origin,
            community,
            private_result=community is not None and community.results_to is ResultsTo.DIRECT,
        )
        request = jobs.GenerateRequest(
            run_id=run_id,
            user_id=user_id,
            model_id=model.id,
            lora_key=model.lora_key,
            template_key=model.template_key,
            trigger=model.trigger or "",
            style=entry.spec,
            count=count,
            candidates=max(self._candidates, count),
            allow_nsfw=bool(community and community.nsfw_allowed) and origin.age_restricted is not False,
        )
        quota = community.community_daily_quota if community is not None else None
        # The flow checked the community's limit on what it read; members asking at the same moment each
        # read the same count, so it is read again and the run created under the community's lock.
        guard = _lock_of(self._community_locks, community.id) if community and quota is not None else None
        async with guard or contextlib.nullcontext():
            if guard is not None and quota is not None:
                place.community = None
                fresh = await self._community(place)
                if fresh is not None and fresh.generations_today + fresh.active_generations >= quota:
                    return ev.CommunityQuotaReached(limit=quota)
            run = await self._repos.runs.create(
                run_id, user_id, RunKind.GENERATE, delivery, model_id=model.id, style=entry.spec.name, count=count,
                request=request.model_dump_json(),
            )  # fmt: skip
        position = await self._submit(request, run.attempt)
        return ev.RunQueued(run_id=run_id, kind="generate", queue_position=position, style=entry.spec.name, count=count)

    async def _submit(self, request: jobs.TrainRequest | jobs.GenerateRequest, attempt: int) -> int | None:
        """Enqueue a run just created; its place in line (None: unknown)."""
        try:
            return await self._queue.submit(request, attempt)
        except QueueUnreachable as exc:
            # Redis went away between the check and the submit. The run waits in the database; the
            # run supervisor submits it again once Redis is back (it finds no job for it).
            log.warning("run %s stored but not queued yet (Redis unreachable: %s)", request.run_id, exc)
            return None

    async def _style_entry(self, place: _Place, name: str) -> StyleEntry | None:
        wanted = name.casefold()
        for key, entry in self._styles.items():
            if key.casefold() == wanted:
                return entry
        snapshot = await self._community(place)
        if snapshot is None:
            return None
        for custom in snapshot.custom_styles:
            if custom.name.casefold() == wanted:
                # The stored style's fields are the job's, by name (lora_key: the admin's upload).
                return StyleEntry(jobs.StyleSpec.model_validate(custom, from_attributes=True))
        return None

    def _delivery(self, origin: Origin, community: Community | None, *, private_result: bool) -> Delivery:
        community_id = community.id if community else None
        if private_result and not origin.private and origin.direct_chat_id:
            return Delivery(
                platform=origin.platform, chat_id=origin.direct_chat_id, community_id=community_id,
                asked_in_chat_id=origin.chat_id,
            )  # fmt: skip
        return Delivery(platform=origin.platform, chat_id=origin.chat_id, community_id=community_id)

    async def _cancel_runs(self, user_id: int) -> tuple[tuple[str, ...], list[ev.Event]]:
        """Cancel every active run: (the runs asked to stop, JobFinished for each).

        Each run ends here and now, whatever its worker's state: a worker that holds one is told to
        stop (and its late outcome is ignored); one that was killed or is cut off cannot keep the
        user waiting. With Redis down the stop is sent once it is back.
        """
        asked: list[str] = []
        closed: list[ev.Event] = []
        for run in await self._repos.runs.active(user_id):
            asked.append(run.id)
            finished = await self._cancel(run)
            if finished is not None:
                closed.append(finished)
        return tuple(asked), closed

    async def _cancel(self, run: Run) -> ev.JobFinished | None:
        """End one active run as cancelled (see :meth:`_cancel_runs`); the event that says so, or None
        when it ended meanwhile. Its user hears about it from the caller, so it counts as delivered."""
        await self._queue.cancel(run.kind.value, run.id, run.attempt)
        outcome: jobs.TrainOutcome | jobs.GenerateOutcome
        if run.kind is RunKind.TRAIN:
            outcome = jobs.TrainOutcome(run_id=run.id, error=jobs.ErrorCode.CANCELLED)
            recorded = await self._record_training(run, outcome)
        else:
            outcome = jobs.GenerateOutcome(run_id=run.id, error=jobs.ErrorCode.CANCELLED)
            recorded = await self._record_generation(run, outcome)
        if not recorded:
            return None
        await self._repos.runs.mark_delivered(run.id)
        return ev.JobFinished(outcome=outcome, style=run.style)

    async def _add_style(
        self,
        user_id: int,
        place: _Place,
        name: str,
        prompt: str,
        lora: ev.OfferedFile | None,
        download: Downloader | None,
    ) -> ev.Event:
        community = await self._require_community(place)
        if name.casefold() in (k.casefold() for k in self._styles):
            return ev.StyleAdded(name, "exists_builtin")
        lora_key = None
        if lora is not None:
            if download is None:
                return ev.StyleAdded(name, "download_failed")
            try:
                data = await download(lora)
                await asyncio.to_thread(validate_lora_file, data, self._limits.max_lora_bytes)
            except DownloadError as exc:
                return ev.StyleAdded(name, exc.reason, exc.limit)
            except InvalidLoraFile as exc:
                return ev.StyleAdded(name, str(exc.code))
            lora_key = community_style_key(community.id, f"{name}-{_token()}.safetensors")
            await asyncio.to_thread(self._blobs.put_bytes, lora_key, data)
        previous = await self._repos.communities.add_custom_style(
            community.id, name, prompt, "", lora_key, FACECHAIN.style_weight, FACECHAIN.face_weight, user_id
        )
        if previous is not None and previous.lora_key and previous.lora_key != lora_key:
            await self._release_style_file(previous.lora_key)
        await self._repos.communities.set_style_enabled(community.id, name, True)
        return ev.StyleAdded(name, None, replaced=previous is not None)

    # --------------------------------------------------------------------------------- outcomes
    async def _record_training(self, run: Run, outcome: jobs.TrainOutcome) -> bool:
        """Store a training outcome; False if the run had already ended (nothing is changed)."""
        code = None if outcome.ok and outcome.lora_key else (outcome.error or jobs.ErrorCode.INTERNAL)
        if not await self._repos.runs.finish(run.id, _run_status(code), code and code.value, outcome.message):
            return False
        if run.model_id is None:
            return True
        if code is None and outcome.lora_key:
            await self._repos.models.mark_ready(
                run.model_id,
                lora_key=outcome.lora_key,
                template_key=outcome.template_key,
                trigger=outcome.trigger or "",
                subject=outcome.subject.value if outcome.subject else None,
            )
        elif code is not None:
            status = ModelStatus.CANCELLED if code is jobs.ErrorCode.CANCELLED else ModelStatus.FAILED
            await self._repos.models.mark_failed(run.model_id, code.value, status)
        return True

    async def _record_generation(self, run: Run, outcome: jobs.GenerateOutcome) -> bool:
        """Store a generation outcome and charge the quota on success; False if already finished."""
        code = None if outcome.ok and outcome.portraits else (outcome.error or jobs.ErrorCode.NO_USABLE_PORTRAIT)
        if not await self._repos.runs.finish(run.id, _run_status(code), code and code.value, outcome.message):
            return False
        if code is None:
            for portrait in outcome.portraits:
                await self._repos.portraits.add(
                    run.id, run.user_id, portrait.key, portrait.seed, portrait.score, run.style or ""
                )
            await self._repos.usage.increment(run.user_id, run.delivery.community_id, _charge_day(run))
        style_file = _style_file(run)
        if style_file is not None:
            # Its style may have been removed or replaced while this run waited: the file may go now.
            await self._release_style_file(style_file)
        return True

    async def _origin_of(self, run: Run) -> Origin:
        """The origin a worker's event is treated as coming from: the run's chat and community."""
        community = None
        if run.delivery.community_id is not None:
            community = await self._repos.communities.get(run.delivery.community_id)
        return Origin(
            platform=run.delivery.platform,
            user_id="",
            chat_id=run.delivery.chat_id,
            private=community is None,
            community_id=community.external_id if community else None,
        )

    async def _notify(self, run: Run, replies: Sequence[Reply]) -> None:
        if not replies:
            return
        notifier = self._notifiers.get(run.delivery.platform)
        if notifier is None:
            log.warning(
                "no notifier for %s; %d replies for run %s dropped",
                run.delivery.platform,
                len(replies),
                run.id,
            )
            return
        fresh = await self._repos.runs.get(run.id) or run
        at = _progress_at(fresh)
        located = [
            replace(r, stored_at=at)
            if isinstance(r, EditProgress) and r.run_id == run.id and r.stored_at is None
            else r
            for r in replies
        ]
        sent = await notifier.deliver(fresh.delivery, located)
        for run_id, message_id in sent.items():
            await self._repos.runs.set_progress_message(run_id, message_id)

    async def _release_style_file(self, lora_key: str) -> None:
        """Delete an admin's uploaded style file once neither a style nor a queued or running run uses it:
        portraits asked for before the style was removed or replaced are still made with it."""
        if await self._repos.communities.style_file_used(lora_key) or await self._repos.runs.active_using(lora_key):
            return
        await self._delete_blobs([lora_key])

    async def _delete_blobs(self, keys: Sequence[str]) -> None:
        for key in keys:
            await asyncio.to_thread(self._blobs.delete, key)


def _style_file(run: Run) -> str | None:
    """The uploaded style file a generation run loads (an admin's LoRA), if any."""
    if run.kind is not RunKind.GENERATE or not run.request:
        return None
    try:
        return jobs.GenerateRequest.model_validate_json(run.request).style.lora_key
    except ValueError:
        return None


def _lock_of(locks: weakref.WeakValueDictionary[int, asyncio.Lock], key: int) -> asyncio.Lock:
    """The lock of ``key`` in ``locks`` (made on first use; forgotten once nobody holds or waits for it)."""
    lock = locks.get(key)
    if lock is None:
        lock = asyncio.Lock()
        locks[key] = lock
    return lock


def _charge_day(run: Run) -> date:
    """The day a generation is charged to: the day it was asked for (it counted against that day's
    limit while it waited and ran), in UTC."""
    return run.created_at.astimezone(UTC).date()


def _progress_at(run: Run) -> tuple[str, str] | None:
    """Where a run's progress message is stored: (chat id, message id), None before it was sent."""
    delivery = run.delivery
    if delivery.progress_message_id is None:
        return None
    return (delivery.asked_in_chat_id or delivery.chat_id, delivery.progress_message_id)


def _model_state(status: ModelStatus | None) -> ModelState:
    if status is None:
        return ModelState.NONE
    return {
        ModelStatus.PENDING: ModelState.TRAINING,
        ModelStatus.TRAINING: ModelState.TRAINING,
        ModelStatus.READY: ModelState.READY,
        ModelStatus.FAILED: ModelState.FAILED,
        ModelStatus.CANCELLED: ModelState.NONE,
    }[status]


def _run_status(code: jobs.ErrorCode | None) -> RunStatus:
    if code is None:
        return RunStatus.DONE
    return RunStatus.CANCELLED if code is jobs.ErrorCode.CANCELLED else RunStatus.FAILED


def _some(event: ev.Event | None) -> list[ev.Event]:
    return [] if event is None else [event]


def _describe_custom(prompt: str) -> str:
    """A community style's description: the start of its prompt."""
    return prompt if len(prompt) <= 60 else prompt[:57] + "..."


def _token() -> str:
    return secrets.token_hex(8)


def _new_run_id(prefix: str) -> str:
    return f"{prefix}{datetime.now(UTC):%Y%m%d%H%M%S}{secrets.token_hex(5)}"


__all__ = [
    "ConversationService",
    "DownloadError",
    "Downloader",
    "Notifier",
    "Origin",
    "StyleEntry",
]
