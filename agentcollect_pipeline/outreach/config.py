"""Outreach resources bound to the environment (secrets through dg.EnvVar only; see settings.ENVIRONMENT)."""

import dagster as dg

from agentcollect_pipeline.outreach.channels import OutreachSettings, SendGridEmailResource, TwilioResource
from agentcollect_pipeline.settings import env


def build_outreach_resources() -> dict[str, dg.ConfigurableResource]:
    return {
        "outreach_settings": OutreachSettings(
            dry_run=(env("AGENTCOLLECT_OUTREACH_DRY_RUN") or "false").lower() in ("1", "true", "yes"),
            org_name=env("AGENTCOLLECT_ORG_NAME") or "Accounts Receivable",
            payment_link_template=env("AGENTCOLLECT_PAYMENT_LINK_TEMPLATE"),
            public_base_url=env("AGENTCOLLECT_PUBLIC_BASE_URL"),
            default_timezone=env("AGENTCOLLECT_ORG_TIMEZONE") or "America/New_York",
        ),
        "sendgrid": SendGridEmailResource(
            api_key=dg.EnvVar("SENDGRID_API_KEY"),
            base_url=env("SENDGRID_BASE_URL"),
            from_email=env("AGENTCOLLECT_EMAIL_FROM"),
            reply_to=env("AGENTCOLLECT_EMAIL_REPLY_TO"),
            unsubscribe_secret=dg.EnvVar("AGENTCOLLECT_UNSUBSCRIBE_SECRET"),
        ),
        "twilio": TwilioResource(
            account_sid=dg.EnvVar("TWILIO_ACCOUNT_SID"),
            auth_token=dg.EnvVar("TWILIO_AUTH_TOKEN"),
            from_number=env("TWILIO_FROM_NUMBER") or "+15005550006",
            base_url=env("TWILIO_BASE_URL"),
        ),
    }
