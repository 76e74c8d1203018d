-- The fleet database as the receiver made it before schema versions (commit 8a2788a, schema 1):
-- tests/fleet/test_fleet_migrate.py loads it and migrates it.
--
-- PostgreSQL database dump
--


-- Dumped from database version 15.18 (Debian 15.18-0+deb12u1)
-- Dumped by pg_dump version 15.18 (Debian 15.18-0+deb12u1)

SET statement_timeout = 0;
SET lock_timeout = 0;
SET idle_in_transaction_session_timeout = 0;
SET client_encoding = 'UTF8';
SET standard_conforming_strings = on;
SELECT pg_catalog.set_config('search_path', '', false);
SET check_function_bodies = false;
SET xmloption = content;
SET client_min_messages = warning;
SET row_security = off;

SET default_tablespace = '';

SET default_table_access_method = heap;

--
-- Name: events; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.events (
    id integer NOT NULL,
    unit_id integer NOT NULL,
    unit_uid character varying(100) NOT NULL,
    epoch integer NOT NULL,
    event_id bigint NOT NULL,
    at real NOT NULL,
    received_at real NOT NULL,
    kind character varying(100) NOT NULL,
    severity character varying(16) NOT NULL,
    source character varying(32) NOT NULL,
    message text NOT NULL
);


--
-- Name: events_id_seq; Type: SEQUENCE; Schema: public; Owner: -
--

CREATE SEQUENCE public.events_id_seq
    AS integer
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;


--
-- Name: events_id_seq; Type: SEQUENCE OWNED BY; Schema: public; Owner: -
--

ALTER SEQUENCE public.events_id_seq OWNED BY public.events.id;


--
-- Name: heartbeats; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.heartbeats (
    id integer NOT NULL,
    unit_id integer NOT NULL,
    received_at real NOT NULL,
    seq bigint NOT NULL,
    idempotency_key character varying(200) NOT NULL,
    sent_at real NOT NULL,
    health character varying(32) NOT NULL,
    revision_id bigint,
    revision_state character varying(32),
    firmware character varying(100),
    body text NOT NULL
);


--
-- Name: heartbeats_id_seq; Type: SEQUENCE; Schema: public; Owner: -
--

CREATE SEQUENCE public.heartbeats_id_seq
    AS integer
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;


--
-- Name: heartbeats_id_seq; Type: SEQUENCE OWNED BY; Schema: public; Owner: -
--

ALTER SEQUENCE public.heartbeats_id_seq OWNED BY public.heartbeats.id;


--
-- Name: login_failures; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.login_failures (
    id integer NOT NULL,
    address character varying(64) NOT NULL,
    at real NOT NULL
);


--
-- Name: login_failures_id_seq; Type: SEQUENCE; Schema: public; Owner: -
--

CREATE SEQUENCE public.login_failures_id_seq
    AS integer
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;


--
-- Name: login_failures_id_seq; Type: SEQUENCE OWNED BY; Schema: public; Owner: -
--

ALTER SEQUENCE public.login_failures_id_seq OWNED BY public.login_failures.id;


--
-- Name: sessions; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.sessions (
    sid_hash character varying(64) NOT NULL,
    created_at real NOT NULL,
    expires_at real NOT NULL,
    address character varying(64) NOT NULL
);


--
-- Name: settings; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.settings (
    key character varying(64) NOT NULL,
    value text NOT NULL
);


--
-- Name: units; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.units (
    id integer NOT NULL,
    name character varying(64) NOT NULL,
    token_hash character varying(64) NOT NULL,
    created_at real NOT NULL,
    unit_id character varying(100),
    unit_name character varying(1000),
    site character varying(1000),
    serial character varying(1000),
    last_seen real,
    last_sent_at real,
    last_seq bigint,
    last_gap real,
    health character varying(32),
    reasons text NOT NULL,
    revision_id bigint,
    revision_sha256 character varying(64),
    revision_state character varying(32),
    firmware character varying(100),
    heartbeat_count bigint NOT NULL,
    events_cursor bigint,
    epoch integer NOT NULL,
    interval_request real,
    interval_requested_at real,
    interval_requested_by character varying(200),
    identify_request boolean NOT NULL,
    identify_requested_at real,
    identify_requested_by character varying(200),
    identify_delivered_at real
);


--
-- Name: units_id_seq; Type: SEQUENCE; Schema: public; Owner: -
--

CREATE SEQUENCE public.units_id_seq
    AS integer
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;


--
-- Name: units_id_seq; Type: SEQUENCE OWNED BY; Schema: public; Owner: -
--

ALTER SEQUENCE public.units_id_seq OWNED BY public.units.id;


--
-- Name: events id; Type: DEFAULT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.events ALTER COLUMN id SET DEFAULT nextval('public.events_id_seq'::regclass);


--
-- Name: heartbeats id; Type: DEFAULT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.heartbeats ALTER COLUMN id SET DEFAULT nextval('public.heartbeats_id_seq'::regclass);


--
-- Name: login_failures id; Type: DEFAULT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.login_failures ALTER COLUMN id SET DEFAULT nextval('public.login_failures_id_seq'::regclass);


--
-- Name: units id; Type: DEFAULT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.units ALTER COLUMN id SET DEFAULT nextval('public.units_id_seq'::regclass);


--
-- Name: events events_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.events
    ADD CONSTRAINT events_pkey PRIMARY KEY (id);


--
-- Name: heartbeats heartbeats_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.heartbeats
    ADD CONSTRAINT heartbeats_pkey PRIMARY KEY (id);


--
-- Name: login_failures login_failures_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.login_failures
    ADD CONSTRAINT login_failures_pkey PRIMARY KEY (id);


--
-- Name: sessions sessions_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.sessions
    ADD CONSTRAINT sessions_pkey PRIMARY KEY (sid_hash);


--
-- Name: settings settings_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.settings
    ADD CONSTRAINT settings_pkey PRIMARY KEY (key);


--
-- Name: units units_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.units
    ADD CONSTRAINT units_pkey PRIMARY KEY (id);


--
-- Name: event_received_at; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX event_received_at ON public.events USING btree (received_at);


--
-- Name: event_unit_id; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX event_unit_id ON public.events USING btree (unit_id);


--
-- Name: event_unit_id_unit_uid_epoch_event_id; Type: INDEX; Schema: public; Owner: -
--

CREATE UNIQUE INDEX event_unit_id_unit_uid_epoch_event_id ON public.events USING btree (unit_id, unit_uid, epoch, event_id);


--
-- Name: heartbeat_received_at; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX heartbeat_received_at ON public.heartbeats USING btree (received_at);


--
-- Name: heartbeat_unit_id; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX heartbeat_unit_id ON public.heartbeats USING btree (unit_id);


--
-- Name: heartbeat_unit_id_idempotency_key; Type: INDEX; Schema: public; Owner: -
--

CREATE UNIQUE INDEX heartbeat_unit_id_idempotency_key ON public.heartbeats USING btree (unit_id, idempotency_key);


--
-- Name: heartbeat_unit_id_sent_at; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX heartbeat_unit_id_sent_at ON public.heartbeats USING btree (unit_id, sent_at);


--
-- Name: loginfailure_address; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX loginfailure_address ON public.login_failures USING btree (address);


--
-- Name: operatorsession_expires_at; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX operatorsession_expires_at ON public.sessions USING btree (expires_at);


--
-- Name: unit_name; Type: INDEX; Schema: public; Owner: -
--

CREATE UNIQUE INDEX unit_name ON public.units USING btree (name);


--
-- Name: unit_token_hash; Type: INDEX; Schema: public; Owner: -
--

CREATE UNIQUE INDEX unit_token_hash ON public.units USING btree (token_hash);


--
-- Name: events events_unit_id_fkey; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.events
    ADD CONSTRAINT events_unit_id_fkey FOREIGN KEY (unit_id) REFERENCES public.units(id) ON DELETE CASCADE;


--
-- Name: heartbeats heartbeats_unit_id_fkey; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.heartbeats
    ADD CONSTRAINT heartbeats_unit_id_fkey FOREIGN KEY (unit_id) REFERENCES public.units(id) ON DELETE CASCADE;


--
-- PostgreSQL database dump complete
--


