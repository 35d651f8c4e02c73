"""Alerts to the operators (CONTRACT §7): circuit transitions and stale backlogs → signed webhook, mail.

Takes in the circuit's transitions, as the breaker writes them to the change log
(`ConfigChange` rows `circuit_opened` / `circuit_closed`, in the transaction of the state change),
and each destination's pending backlog (`delivery.observability.stats.pending_backlog`); hands on
`Alert` rows, one per transition or stale-backlog episode, plus reminders, and one `AlertSend` per
channel, sent and retried by the `maintenance` queue only, so that an alert never holds a delivery.

- `raising`: which alerts are due (transitions, stale backlogs, reminders); exactly one each,
  whichever and however many jobs look, through unique rows and conditional updates;
- `channels`: the body, its signature, the webhook POST (through `delivery.sending.http`, pinned
  to checked addresses) and the mail;
- `sending`: claim due sends, send them within their deadline, record the outcome, retry later;
- `job`: one run of all three, what beat's `run_alerts` task calls every few seconds.
"""
