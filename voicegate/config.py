"""Settings from ``VOICEGATE_*`` environment variables (pydantic-settings).

Every field here is listed by ``voicegate serve --help`` and in README's configuration table.
Owns: the Settings model. Must not import any other voicegate module.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings", "EngineKind"]

EngineKind = Literal["personaplex", "tiny", "echo"]


class Settings(BaseSettings):
    """Gateway settings; each field is read from ``VOICEGATE_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix="VOICEGATE_", extra="ignore")

    # --- HTTP ---
    host: str = Field("0.0.0.0", description="Address the HTTP server binds to.")
    port: int = Field(
        8000, ge=1, le=65535, description="HTTP port (Twilio webhooks, WebRTC, metrics)."
    )
    public_url: str = Field(
        "http://localhost:8000",
        description="Public https base URL that Twilio reaches (used to sign-check and build stream URLs).",
    )
    log_level: str = Field("INFO", description="Python logging level.")

    # --- engine ---
    engine: EngineKind = Field("tiny", description="Model backend: personaplex, tiny or echo.")
    model_dir: Path | None = Field(
        None, description="Folder with the PersonaPlex release files (engine=personaplex)."
    )
    device: str = Field("auto", description="Torch device for the engine: auto, cpu or cuda[:N].")
    max_calls: int = Field(
        0, ge=0, description="Most simultaneous calls; 0 = as many as the engine's slots allow."
    )
    kv_cache_dtype: Literal["bf16", "fp8"] = Field(
        "bf16", description="KV cache precision on the GPU (fp8 is opt-in)."
    )
    asr_model_dir: Path | None = Field(
        None,
        description="Folder with a Kyutai streaming STT release (kyutai/stt-1b-en_fr, its -candle release, or kyutai/stt-2.6b-en: config.json, model.safetensors, the tokenizer): the caller's words are transcribed in the engine tick (transcript.caller events). Unset: no caller transcript.",
    )

    # --- engine faults (a fault moves every call to overflow or ends it; the engine is rebuilt) ---
    engine_tick_timeout_s: float = Field(
        2.0,
        gt=0,
        le=60,
        description="A tick running longer than this is an engine fault (as is a tick that raises or returns NaN/inf audio): calls go to their overflow destination or end, the engine is rebuilt.",
    )
    engine_fault: Literal["", "raise", "nan", "hang"] = Field(
        "",
        description="TESTS ONLY: make the engine's model fault (raise, NaN audio, hang) to exercise fault handling; never set in production.",
    )
    engine_fault_after_s: float = Field(
        1.0,
        ge=0,
        description="TESTS ONLY: seconds after engine_fault_calls calls are in until the fault.",
    )
    engine_fault_calls: int = Field(
        1, ge=1, description="TESTS ONLY: calls in the engine that start the engine_fault clock."
    )
    engine_fault_engines: int = Field(
        1,
        ge=1,
        description="TESTS ONLY: how many engines (start-up, then rebuilds) get engine_fault.",
    )
    engine_fault_warmup_s: float = Field(
        0.0,
        ge=0,
        le=60,
        description="TESTS ONLY: with engine_fault set, every engine's warm-up (a rebuild too) takes this much longer.",
    )

    # --- personas and routing ---
    personas_dir: Path = Field(
        Path("personas"), description="Folder of persona YAML files and voice clips."
    )
    numbers_file: Path = Field(
        Path("telephony/numbers.yaml"), description="Called number / SIP user -> persona map."
    )
    reload_interval_s: float = Field(
        0.5, gt=0, description="How often persona and numbers files are checked for edits."
    )

    # --- events ---
    redis_url: str = Field("redis://127.0.0.1:6379/0", description="Redis for call events.")
    events_retention_s: int = Field(
        7 * 24 * 3600, ge=60, description="TTL of a call's Redis keys after it ends."
    )
    events_queue_max: int = Field(10_000, ge=100, description="Bound of the in-memory event queue.")
    events_journal_dir: Path = Field(
        Path("var/journal"), description="On-disk journal for events while Redis is down."
    )
    events_stream_maxlen: int = Field(
        100_000, ge=1000, description="Approximate MAXLEN of the global events stream."
    )
    events_journal_max_bytes: int = Field(
        1 << 30, ge=1 << 20, description="Most bytes the event journal may hold during an outage."
    )

    # --- Twilio ---
    twilio_auth_token: str = Field(
        "", description="Twilio auth token used to check X-Twilio-Signature."
    )
    twilio_media_timeout_s: float = Field(
        10.0,
        ge=0,
        description="End a Twilio call whose media stopped this long while its socket stays open (0: never).",
    )
    drain_timeout_s: float = Field(
        30.0, ge=0, description="On SIGTERM, how long active calls may run before they are ended."
    )

    # --- SIP ---
    sip_enabled: bool = Field(True, description="Start the SIP user-agent server with `serve`.")
    sip_host: str = Field("0.0.0.0", description="Address the SIP server binds to.")
    sip_port: int = Field(5060, ge=0, le=65535, description="SIP port (UDP and TCP).")
    sip_public_host: str = Field(
        "", description="Address advertised in SDP/Contact (empty: the bound or local address)."
    )
    sip_allow: str = Field(
        "", description="Comma-separated CIDRs allowed to send SIP; empty = any source."
    )
    rtp_port_min: int = Field(20000, ge=1024, le=65534, description="Lowest RTP port.")
    rtp_port_max: int = Field(20999, ge=1025, le=65535, description="Highest RTP port.")
    rtp_timeout_before_media_s: float = Field(
        30.0, gt=0, description="End a SIP call when no RTP arrives this long after the answer."
    )
    rtp_timeout_s: float = Field(
        15.0, gt=0, description="End a SIP call when RTP stops for this long (peer gone, no BYE)."
    )
    sip_invite_rate_per_s: float = Field(
        20.0, ge=0, description="New INVITEs/s per source address (0: no limit); more get 503."
    )
    sip_invite_burst: int = Field(40, ge=1, description="INVITE burst allowed per source address.")
    sip_transfer_host: str = Field(
        "",
        description="Host of the SIP URI an E.164 transfer or overflow target becomes (sip:+1...@host;user=phone), e.g. the trunk's termination domain; empty: the address the INVITE came from.",
    )
    sip_refer_timeout_s: float = Field(
        30.0,
        gt=0,
        le=300,
        description="A SIP transfer fails (the call stays with the agent) when no final NOTIFY arrives this long after the REFER.",
    )
    sip_auth_username: str = Field(
        "", description="Digest username required on INVITEs (empty: no SIP authentication)."
    )
    sip_auth_password: str = Field("", description="Digest password for sip_auth_username.")
    sip_auth_realm: str = Field("voicegate", description="Digest realm of the SIP challenge.")
    sip_answer_delay_ms: int = Field(
        0, ge=0, le=60_000, description="Ringing time between 180 and the 200 answer."
    )

    # --- call flow ---
    handoff_secret: str = Field(
        "",
        description="HMAC-SHA256 key that signs warm handoff documents (VoiceGate-Signature); empty: no handoff POSTs.",
    )
    handoff_timeout_s: float = Field(
        1.5, gt=0.0, le=10.0, description="Longest wait for a handoff endpoint (s)."
    )

    # --- the edge's own work per call ---
    edge_loop_budget_pct: float = Field(
        80.0,
        ge=0.0,
        le=100.0,
        description="Admission: the share of one core the event loop may spend on calls; calls beyond budget / measured cost per call are refused (0: no edge limit, engine slots only).",
    )
    gil_switch_ms: float = Field(
        5.0,
        gt=0.0,
        le=100.0,
        description="`voicegate serve`: how long a thread may keep Python's interpreter lock while another waits for it (ms; Python's default 5). The event loop shares it with the gateway's helper threads (tick reader, voice activity batcher): lower makes the loop wait less behind them.",
    )
    stall_trace_ms: float = Field(
        0.0,
        ge=0.0,
        le=10_000.0,
        description="Diagnostics: when the event loop runs this much late (ms), sample every thread's stack and log the most common every 30 s (0: off; a thread wakes every 4 ms while on).",
    )
    edge_call_cost_pct: float = Field(
        1.0,
        gt=0.0,
        le=100.0,
        description="Admission: a call's loop cost (% of a core) until measured.",
    )
    twilio_send_ms: int = Field(
        40,
        ge=20,
        le=80,
        multiple_of=20,
        description="Agent audio per Twilio media message (and mark): fewer, longer messages cost the event loop less; each 20 ms more may delay fresh audio by up to 20 ms.",
    )
    twilio_cushion_ms: int = Field(
        -1,
        ge=-1,
        le=40,
        description="Silence sent ahead of each agent reply on Twilio (ms), which stays queued there for the rest of the reply: a media message that leaves up to this much late (a busy event loop) still finds audio queued, at this much more delay on that reply. -1 (auto): the event loop's recent worst lateness (its peak, halving every 10 s), so a loop that keeps time adds no delay; 0: none.",
    )
    blas_threads: int = Field(
        1,
        ge=0,
        le=256,
        description="Threads numpy's OpenBLAS may use in each serving process (0: its own default, one per core). A product split over threads waits for all of them: on a busy host that stalled the event loop for tens of ms.",
    )
    caller_frame_margin_ms: int = Field(
        8,
        ge=0,
        le=40,
        description="A caller's 80 ms frame is completed this long before the engine tick that takes it (ms): the room a busy event loop has before the frame misses its tick (an underrun, and 80 ms of the caller dropped later). Adds this much delay to what the model hears.",
    )
    # Twilio transfers and overflow: how long <Dial> rings before the persona's fallback_say
    twilio_dial_timeout_s: int = Field(
        30, ge=5, le=600, description="How long a Twilio <Dial> rings the person (s)."
    )
    vad_batch_ms: float = Field(
        16.0,
        ge=0.0,
        le=500.0,
        description="Caller voice activity: score every call's windows in one batched run per this period on a worker thread (0: each call scores inline on the event loop).",
    )

    # --- WebRTC and the persona editor ---
    webrtc_enabled: bool = Field(
        True,
        description="Serve browser calls (POST /webrtc/offer); false leaves aiortc and av unimported.",
    )
    webrtc_token: str = Field(
        "", description="Bearer token for POST /webrtc/offer (empty: refuse all)."
    )
    editor_token: str = Field(
        "", description="Bearer token for the persona editing API (empty: refuse all)."
    )
    webrtc_stun_urls: str = Field(
        "", description="Comma-separated STUN URLs for WebRTC ICE (empty: host candidates only)."
    )
    webrtc_loopback_only: bool = Field(
        False,
        description="WebRTC over 127.0.0.1 only: gather loopback candidates, drop the browser's others (tests, local demo).",
    )
    webrtc_jitter_prefetch: int = Field(
        1,
        ge=0,
        le=8,
        description="Received audio frames held back to reorder packets (aiortc's default is 4 = 80 ms more delay).",
    )

    # --- carrier legs over pipecat's serializers (the voicegate[pipecat] extra) ---
    carriers: str = Field(
        "",
        description="Comma-separated carriers whose media streams are served on /{carrier}/media: telnyx, plivo, exotel, vonage (empty: none, and pipecat is never imported).",
    )
    carrier_token: str = Field(
        "",
        description="Shared secret a carrier's stream URL carries as ?token= (Telnyx does not sign its media socket); empty: a carrier without another credential is refused.",
    )
    plivo_auth_token: str = Field(
        "",
        description="Plivo auth token: the X-Plivo-Signature-V3 of each /plivo/media upgrade is checked with it.",
    )
    telnyx_api_key: str = Field(
        "",
        description="Telnyx API key: a persona's transfer and our hang-ups of Telnyx calls go through Call Control (empty: transfers are unsupported and a hang-up only closes the media socket).",
    )
    telnyx_api_url: str = Field(
        "https://api.telnyx.com/v2",
        description="Telnyx Call Control base URL (tests point it elsewhere).",
    )

    # --- long calls (engine re-anchoring) ---
    reanchor: bool = Field(
        True,
        description="Long calls keep their persona: before the prompt leaves the model's 240 s window, rebuild the call's context as the persona prompt plus its last VOICEGATE_REANCHOR_FRAMES frames (false: the persona slides out after about 3.5 minutes).",
    )
    reanchor_frames: int = Field(
        1500,
        ge=1,
        le=2500,
        description="Conversation frames (80 ms each) kept when a long call is re-anchored: more keeps more of the conversation, costs more per re-anchor and re-anchors more often (every 3000 - prompt - this - 250 frames).",
    )

    # --- post-call webhooks and the live call API ---
    webhook_secret: str = Field(
        "",
        description="HMAC-SHA256 key that signs post-call webhook reports (VoiceGate-Signature); empty: no webhooks are sent.",
    )
    webhook_retry_for_s: float = Field(
        86400.0,
        gt=0.0,
        description="How long after call.ended a report is retried (exponential backoff with jitter) before it goes to the dead-letter stream.",
    )
    webhook_backoff_min_s: float = Field(
        1.0, gt=0.0, description="First retry delay of a webhook (s); doubles per attempt."
    )
    webhook_backoff_max_s: float = Field(
        600.0, gt=0.0, description="Longest delay between two webhook attempts (s)."
    )
    webhook_timeout_s: float = Field(
        10.0, gt=0.0, le=120.0, description="Longest wait for a webhook receiver's answer (s)."
    )
    webhook_settle_s: float = Field(
        1.0,
        ge=0.0,
        le=60.0,
        description="Wait this long after call.ended before building the report, so events logged just after it (a recording's end, the caller's last words) are in it.",
    )
    webhook_consumer: str = Field(
        "",
        description="This gateway's consumer name in the Redis webhooks group (empty: the host name); keep it stable across restarts.",
    )
    calls_api_token: str = Field(
        "",
        description="Bearer token for the live call API (/calls: list, hang up, transfer, events); the editor token works too (empty: editor token only).",
    )

    # --- operators' views (live calls, call timelines, persona comparison) ---
    viewer_token: str = Field(
        "",
        description="Read-only bearer token for the page's live calls, call history and persona comparison (the editor token works too; empty: editor token only).",
    )

    # --- per-call context (prompt variables, call-start webhook) ---
    call_start_webhook_url: str = Field(
        "",
        description="The operator's call-start webhook: a signed POST per call before it starts; its JSON answer may set prompt variables, pick another persona, or refuse/overflow the call (empty: none).",
    )
    call_start_webhook_secret: str = Field(
        "",
        description="HMAC-SHA256 key that signs call-start webhook requests (VoiceGate-Signature); required with the URL.",
    )
    call_start_webhook_timeout_s: float = Field(
        0.5,
        gt=0.0,
        le=5.0,
        description="Longest wait for the call-start webhook (s); then the call goes on with the values it has.",
    )

    # --- call recordings (persona / numbers `recording:`; issue 17) ---
    recordings_dir: Path = Field(
        Path("var/recordings"),
        description="Folder of call recordings (stereo WAV, caller left, agent right), one sub-folder per UTC day; created 0700, files 0600.",
    )
    recordings_retention_s: float = Field(
        2_592_000.0,
        ge=0,
        description="Recordings older than this are deleted by the gateway's sweep (0: kept forever).",
    )
    recordings_sweep_interval_s: float = Field(
        3600.0, gt=0, description="How often the recordings folder is swept for retention."
    )
    recordings_s3_bucket: str = Field(
        "", description="Upload finished recordings to this S3 bucket (empty: no upload)."
    )
    recordings_s3_endpoint_url: str = Field(
        "", description="S3-compatible endpoint (MinIO, Ceph...); empty: AWS."
    )
    recordings_s3_prefix: str = Field(
        "recordings/", description="Key prefix of uploaded recordings (then YYYY-MM-DD/CALL.wav)."
    )
    recordings_s3_region: str = Field("us-east-1", description="S3 region.")
    recordings_s3_access_key_id: str = Field(
        "", description="S3 access key id (empty: botocore's credential chain)."
    )
    recordings_s3_secret_access_key: str = Field("", description="S3 secret access key.")
    recordings_upload_retry_s: float = Field(
        600.0,
        gt=0,
        description="How long a recording's upload is retried (exponential backoff with jitter) before it is given up (logged; the file stays until retention).",
    )

    # --- fleet (several gateways sharing the Redis above; off: a single gateway) ---
    fleet_enabled: bool = Field(
        False,
        description="Join the fleet registry in Redis: heartbeat this pod's free slots, place each Twilio call on a pod with a free slot (this one first).",
    )
    fleet_pod_id: str = Field(
        "", max_length=64, description="This pod's id in the fleet (empty: the host name)."
    )
    fleet_pod_url: str = Field(
        "",
        description="This pod's own public https base (Twilio reaches its media WebSocket there); empty: VOICEGATE_PUBLIC_URL. Webhooks signed for either are accepted.",
    )
    fleet_sip_address: str = Field(
        "", description="This pod's SIP address host:port as the SBC reaches it (informational)."
    )
    fleet_heartbeat_s: float = Field(
        1.0, gt=0, le=30, description="How often the pod publishes its slots to the registry."
    )
    fleet_ttl_s: float = Field(
        3.0,
        gt=0,
        le=120,
        description="A pod whose heartbeat stops is gone from the registry after this (more than the heartbeat).",
    )
    fleet_reservation_s: float = Field(
        5.0,
        gt=0,
        le=60,
        description="A slot placed for a Twilio call and not claimed by its media stream within this is released.",
    )

    # --- edge workers (issue 10) ---
    edge_workers: int = Field(
        1,
        ge=1,
        le=64,
        description="`serve`: processes that run the legs and calls (1: one process does everything). With N > 1 the engine runs in the main process and N workers share the HTTP port and its slots through shared memory; each SIP dialog runs in the worker its Call-ID hashes to.",
    )

    webhook_recording_wait_s: float = Field(
        5.0,
        ge=0.0,
        le=30.0,  # well under the 60 s after which another gateway may claim the report
        description="After the settle time, how long a post-call report of a recorded call waits (re-reading Redis) for recording.ended, and for recording.uploaded when uploads are on, so it carries the recording's location; then it goes without.",
    )
