"""Rules classifier for customer replies (SMS bodies and email texts): a pure function, no I/O.

`classify(text, received_at)` -> `Classification(intent, promised_date, dispute_reason, confidence)`.

Intents: paid_already, promise_to_pay, dispute, wrong_contact, invoice_copy, stop, other.
Precedence when a reply says several things (the action that matters most): stop > wrong number/person >
dispute > paid already (unless the payment was partial and a date is promised) > promise to pay > invoice
copy > other. Stop is checked first and broadly: a missed opt-out is never acceptable, an over-eager one
costs one message. Matching runs on folded text (lowercase, accents stripped), English plus short replies
in Spanish, French, German and Portuguese. Evaluated by `make bench-replies` on the frozen test part of
replies_eval/; tuned on its dev part only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime

from agentcollect_pipeline.agent.dates import extract_date, fold

__all__ = ["INTENTS", "Classification", "classify", "is_stop"]

INTENTS = ("paid_already", "promise_to_pay", "dispute", "wrong_contact", "invoice_copy", "stop", "other")


@dataclass(frozen=True)
class Classification:
    intent: str
    promised_date: date | None = None
    dispute_reason: str | None = None
    confidence: float = 0.5

    def as_tuple(self) -> tuple[str, date | None, str | None, float]:
        return self.intent, self.promised_date, self.dispute_reason, self.confidence


def _rx(*patterns: str) -> re.Pattern[str]:
    return re.compile("|".join(f"(?:{p})" for p in patterns))


# ---- stop ------------------------------------------------------------------------------------------
# Whole-body keywords (Twilio's defaults, the FCC's per-se words, and their short equivalents abroad).
STOP_KEYWORDS = {
    "stop", "stopall", "stop all", "unsubscribe", "cancel", "end", "quit", "revoke", "optout", "opt out",
    "opt-out", "stop please", "please stop", "pls stop", "plz stop", "stop now", "remove", "remove me",
    "baja", "darme de baja", "alto", "arret", "arrete", "arretez", "desinscrire", "desabonner",
    "abmelden", "abbestellen", "halt", "pare", "parar", "sair", "descadastrar", "cancelar",
}
_COMM = r"(?:text|txt|sms|messag|msg|email|e-mail|mail|call|contact|writ|send|spam|bother|harass|ping|remind)\w*"
STOP_PHRASES = _rx(
    r"\bstop\b(?!\s+by\b|\s+payment\b|\s+in\b|\s+at\b)",
    r"\bunsub\w*", r"\bopt(?:-|\s)?(?:me\s+)?out\b", r"\brevoke\b", r"\bstopall\b",
    rf"\b(?:do\s*not|don'?t|dont|never)\s+(?:ever\s+)?(?:\w+\s+)?{_COMM}\s+(?:me|us|this|again|anymore)",
    rf"\b(?:do\s*not|don'?t|dont)\s+{_COMM}",
    r"\bremove\s+(?:me|us|my|this|our)\b", r"\btake\s+(?:me|us|my\s+\w+|this\s+\w+)\s+off\b",
    r"\bno\s+more\s+(?:texts?|messages?|emails?|calls?|reminders?|sms|contact)",
    r"\bleave\s+(?:me|us)\s+alone\b", r"\bcease\b", r"\bdesist\b",
    r"\b(?:do\s*not|don'?t)\s+(?:wish|want)\s+to\s+(?:receive|be\s+contacted|hear)",
    r"\bnot\s+(?:want|wish)\s+to\s+(?:receive|be\s+contacted)",
    r"\blose\s+my\s+(?:number|email|address)\b", r"\bdelete\s+my\s+(?:number|email|contact|info)",
    r"\bcancel\s+(?:these|the|all|my)\s+(?:messages|texts|emails|reminders|notifications)",
    # es
    r"\bdej(?:en|e|a)\s+de\s+(?:escrib|envi|mand|llam|contact|molest)", r"\bno\s+me\s+(?:vuelv\w+\s+a\s+)?(?:contact|escrib|llam|mand|envi|molest)\w*",
    r"\bdar(?:me|nos)?\s+de\s+baja\b", r"^\W*baja\W*$",
    # fr
    r"\barret(?:e|ez|er)\b", r"\bne\s+(?:me|nous)\s+(?:contact|ecri|envoy|appel|relanc)\w*\s+plus\b", r"\bdesinscri\w*", r"\bdesabonn\w*",
    # de
    r"\bkeine\s+(?:nachrichten|sms|e-?mails?|anrufe|mahnungen|erinnerungen)\s+mehr\b", r"\babmelden\b", r"\babbestellen\b",
    r"\bhor(?:en|e|t)\s+(?:sie\s+)?(?:bitte\s+)?auf\b", r"\bnicht\s+mehr\s+(?:kontaktier|anschreib|anruf|schreib)\w*",
    # pt
    r"\bpar(?:em|e|a)\s+de\s+(?:me\s+)?(?:mand|envi|lig|contat|escrev|perturb)", r"\bnao\s+(?:me\s+)?(?:contat|mand|envi|lig|escrev)\w*\s+mais\b",
    r"\bdescadastr\w*",
)


def is_stop(text: str) -> bool:
    """True when the reply revokes consent: the exact keyword body or looser wording (FCC 2024 rule)."""
    folded = fold(text)
    body = re.sub(r"[^\w\s'-]", " ", folded)
    body = " ".join(body.split())
    return body in STOP_KEYWORDS or bool(STOP_PHRASES.search(folded))


# ---- wrong contact ---------------------------------------------------------------------------------
WRONG_CONTACT = _rx(
    r"\bwrong\s+(?:number|num|no\.?|#|person|guy|lady|email|e-mail|address|contact|company|business|people|phone|party|recipient)",
    r"\bno\s+longer\s+(?:work|with|employed|at|handle|responsible)", r"\b(?:don'?t|do\s+not|doesn'?t)\s+work\s+(?:there|here|for|at)",
    r"\bleft\s+(?:the\s+company|the\s+firm|the\s+business|us|in\s+\w+)", r"\bnot\s+(?:the\s+)?(?:right|correct|appropriate)\s+(?:person|contact|email|address|number)",
    r"\bno\s*(?:one|body)\s+(?:here\s+)?by\s+that\s+name", r"\bthis\s+is\s+not\s+[a-z]", r"\b(?:is|are)\s+not\s+\w+\s+(?:corp|inc|llc|ltd|supply|company)\b",
    r"\bcontact\s+is\s+now\b", r"\b(?:don'?t|do\s+not|no\s+longer)\s+handle\s+(?:invoices|billing|payments|accounts)",
    r"\bsold\s+the\s+(?:business|company)", r"\bpersonal\s+(?:phone|number|cell|email)", r"\bnothing\s+to\s+do\s+with\b",
    r"\bnever\s+(?:done|did)\s+business\b", r"\bjust\s+got\s+(?:this|the)\s+number", r"\bnumber\s+belongs\s+to\b",
    r"\breceptionist\b", r"\bhead\s+office\b", r"\bplease\s+(?:contact|email|send\s+(?:this|it)\s+to)\s+(?:our|my|the)\s+(?:ap|accounts|finance|billing|bookkeep)",
    r"\bsend\s+(?:this|it)\s+to\s+(?:our|the)\s+(?:ap|accounts\s+payable|finance|billing)", r"\binstead\b.*@|@.*\binstead\b",
    r"\breach\s+out\s+to\s+\w+",
    # es / fr / de / pt
    r"\bnumero\s+(?:equivocado|incorrecto|errado|errada)\b", r"\bpersona\s+equivocada\b", r"\bno\s+trabajo\s+(?:en|para|ahi|alli)",
    r"\bya\s+no\s+trabajo\b", r"\bmauvais\s+(?:numero|destinataire|contact)", r"\bmauvaise\s+personne\b", r"\bne\s+travaille\s+plus\b",
    r"\bfalsche\s+(?:nummer|person|adresse|e-?mail)", r"\bnicht\s+mehr\s+(?:bei|in)\s+der\s+firma", r"\bfalsch\s+verbunden\b",
    r"\bnao\s+trabalho\b", r"\bpessoa\s+errada\b",
)

# ---- dispute (with a reason category) --------------------------------------------------------------
DISPUTE_REASONS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("not_received", _rx(r"\bnever\s+(?:received|got|get)\s+(?:the\s+|these\s+|this\s+|our\s+|any\s+)?(?:items?|goods|delivery|shipment|order|parts|products?|equipment)",
                         r"\b(?:didn'?t|did\s+not|have\s+not|haven'?t)\s+(?:receive|get)\s+(?:the\s+|these\s+|our\s+)?(?:items?|goods|delivery|shipment|order|parts|products?)",
                         r"\bmissing\b", r"\bonly\s+came\s+(?:twice|once)\b", r"\bnot\s+(?:delivered|received)\b")),
    ("damaged_or_defective", _rx(r"\bdamaged\b", r"\bdefective\b", r"\bbroken\b", r"\bstopped\s+working\b", r"\bwarranty\b",
                                 r"\bbeschadigt\b", r"\bdefekt\b", r"\bendommag\w*", r"\bdanad[oa]\b", r"\bdanificad[oa]\b")),
    ("not_ordered", _rx(r"\b(?:never|didn'?t|didnt|did\s+not)\s+order", r"\bnot\s+our\s+order\b", r"\b(?:don'?t|dont|do\s+not)\s+recogni[sz]e\b",
                        r"\bisn'?t\s+ours\b", r"\bnot\s+ours\b", r"\bno\s+reconozco\b", r"\bnao\s+reconheco\b", r"\bne\s+reconnai\w*\s+pas\b",
                        r"\bnicht\s+bestellt\b")),
    ("cancelled", _rx(r"\bcancell?ed\b", r"\bterminated\b", r"\bon\s+hold\b")),
    ("duplicate_billing", _rx(r"\bduplicate\b", r"\bbilled\s+(?:us\s+)?twice\b", r"\bcharged\s+(?:us\s+)?twice\b", r"\bdouble[-\s](?:billed|charged)\b")),
    ("service_issue", _rx(r"\bnever\s+(?:performed|completed|done|finished)\b", r"\bnot\s+(?:completed|finished|performed)\b",
                          r"\bunsatisfactory\b", r"\bcomplaint\b", r"\bpoor\s+(?:quality|service|work)")),
    ("wrong_amount", _rx(r"\bwrong\s+(?:amount|price|quantity|po)\b", r"\bamount\s+is\s+(?:wrong|incorrect)", r"\bincorrect\b", r"\bovercharg\w*",
                         r"\b(?:doesn'?t|does\s+not|don'?t)\s+(?:match|reflect)\b", r"\bshould\s+be\s+\$?\d", r"\bquoted?\b", r"\bso\s+high\b",
                         r"\btoo\s+(?:high|much)\b", r"\berror\b", r"\bmistake\b", r"\bcorrect\s+(?:it|this|the\s+invoice)\b", r"\btax\s+exempt\b",
                         r"\blate\s+fees?\b", r"\bmonto\s+(?:es\s+)?incorrecto\b", r"\bincorrect[oa]\b", r"\bfalsch\b", r"\berrad[oa]\b",
                         r"\berreur\b", r"\bbalance\s+(?:shown\s+)?is\s+wrong\b")),
    ("unspecified", _rx(r"\bdisput\w*", r"\bcontest\w*", r"\bdisagree\w*", r"\bwithhold\w*", r"\brefund\b", r"\bissue\s+a\s+credit\b",
                        r"\b(?:this|that|it|invoice)\s+is\s+wrong\b", r"\bwe\s+returned\b", r"\bhave\s+been\s+returned\b",
                        r"\bshould\s+not\s+(?:be\s+billed|exist)\b", r"\breklamation\b", r"\bwidersprech\w*", r"\bcontesta\w*")),
)

# ---- paid already / promise to pay -----------------------------------------------------------------
PAID = _rx(
    r"\balready\s+(?:been\s+)?(?:paid|payed|settled|sent|made|remitted|processed)", r"\ball?ready\s+paid\b", r"\bpaid\s+(?:it\s+)?already\b",
    r"\b(?:has|have|had|was|were|been|is|it's|its)\s+(?:been\s+)?(?:paid|payed|settled|remitted|taken\s+care\s+of)\b",
    r"\b(?:we|i|they|just|you\s+guys)\s+(?:just\s+)?(?:paid|payed|remitted|settled|sent\s+(?:the\s+|a\s+|our\s+)?(?:payment|check|cheque|wire|funds))\b",
    r"\bpaid\s+(?:it|this|that|in\s+full|on|through|via|by|online|yesterday|today|last|back)\b", r"\bpaid\s+\d",
    r"\bpayment\s+(?:was|has\s+been|went|processed|cleared|already|sent|made\s+on)\b", r"\bpayment\s+has\s+already\b",
    r"\b(?:check|cheque)\s+(?:was|has\s+been)\s+(?:mailed|sent)", r"\b(?:mailed|sent)\s+(?:a\s+|the\s+|our\s+)?(?:check|cheque)\b",
    r"\bfunds\s+were\s+transferred\b", r"\btransferred\s+on\b", r"\bproof\s+of\s+payment\b", r"\bremittance\b",
    r"\bpayment\s+run\b.*\bincluded\b", r"\bcleared\s+on\b", r"\btaken\s+care\s+of\b", r"\bdone,?\s+paid\b",
    # es / fr / de / pt
    r"\bya\s+(?:lo\s+|la\s+)?(?:pague|pagamos|pagaron|esta\s+pagad[oa])", r"\bpagad[oa]\b", r"\bdeja\s+(?:paye|regle)", r"\ba\s+deja\s+ete\s+(?:payee?|reglee?)",
    r"\b(?:bereits|schon)\s+(?:bezahlt|uberwiesen|beglichen)", r"\bwurde\s+(?:am\s+[\d.]+\s+)?(?:bezahlt|uberwiesen|beglichen)", r"\bja\s+(?:paguei|pagamos|foi\s+pag)",
    r"\bfoi\s+pago\b",
)
PARTIAL = _rx(r"\b(?:half|part|partial|portion|some)\b", r"\bthe\s+(?:rest|remainder|balance)\b")
PROMISE = _rx(
    r"\b(?:will|shall|'ll|ll|ill|going\s+to|gonna|plan\s+to|intend\s+to|can|could)\s+(?:\w+\s+)?(?:pay|send\s+(?:the\s+)?payment|make\s+(?:the\s+)?payment|settle|get\s+(?:this|it)\s+paid|have\s+it\s+to\s+you|process)",
    r"\bpayment\s+(?:will|is\s+scheduled|scheduled|is\s+planned|planned)\b", r"\bscheduled\s+for\b", r"\bpaying\s+(?:it\s+)?(?:tmrw|tomorrow|on|this|next|by)\b",
    r"\bpromise\s+to\s+pay\b", r"\bprocessing\s+it\b", r"\bexpect\s+(?:the\s+)?payment\b", r"\bgive\s+(?:us|me)\s+\w+\s+(?:days|weeks)\b",
    r"\b(?:check|cheque|payment|wire)\s+will\b", r"\bcan\s+do\s+a\s+payment\b", r"\bnext\s+payment\s+run\b", r"\bwill\s+be\s+paid\b",
    r"\b(?:i|we)\s+(?:can|could)\s+pay\b", r"\bwait\s+until\b", r"\bpay\s+(?:it\s+|this\s+)?(?:on|by)\s+(?:the\s+)?\d",
    # es / fr / de / pt
    r"\bpagare\b", r"\bpagaremos\b", r"\bvamos\s+a\s+pagar\b", r"\bvoy\s+a\s+pagar\b", r"\bpagamos\s+(?:a|el|la|en|el\s+\w+)\b", r"\bpago\s+(?:el|dia|amanha|manana|na|no|en)\b",
    r"\bpaierai\b", r"\bpaierons\b", r"\ballons\s+payer\b", r"\bvais\s+payer\b", r"\bje\s+paie\b", r"\bnous\s+payons\b",
    r"\bzahle\b", r"\bzahlen\s+(?:bis|am|morgen|nachste|ende)\b", r"\bzahlung\s+erfolgt\b", r"\bwerden?\s+(?:\w+\s+)?(?:zahlen|uberweisen)\b", r"\buberweise\b",
    r"\bvou\s+pagar\b", r"\bvamos\s+pagar\b", r"\bpagarei\b",
)

# ---- invoice copy -----------------------------------------------------------------------------------
COPY = _rx(
    r"\bcopy\b", r"\bre-?send\b", r"\bsend\s+(?:it|this|the\s+invoice|invoice|me\s+the\s+invoice)\s+again\b", r"\bsend\s+(?:me\s+)?(?:the\s+)?(?:invoice|inv)\b",
    r"\bpdf\b", r"\battach(?:ment|ed)?\b.*\b(?:missing|send)\b|\bas\s+an\s+attachment\b", r"\bstatement\b", r"\bforward\s+(?:me\s+)?the\s+(?:original\s+)?invoice\b",
    r"\bitemi[sz]ed\b", r"\b(?:payment\s+)?link\s+again\b", r"\bsend\s+me\s+the\s+details\b", r"\bwhere\s+can\s+i\s+(?:see|find|get)\s+the\s+invoice\b",
    r"\bsend\s+(?:me\s+)?the\s+payment\s+link\b", r"\bnever\s+(?:got|received)\s+(?:the\s+)?invoice\b", r"\bdon'?t\s+have\s+(?:this|the)\s+invoice\b",
    r"\bcopia\b", r"\b(?:envie|envienme|envieme|mande|mandar|manden|enviar)\w*\s+(?:\w+\s+)?(?:la\s+|a\s+)?(?:factura|fatura)\b", r"\bsegunda\s+via\b",
    r"\bcopie\b", r"\benvoyer\s+la\s+facture\b", r"\brechnung\s+(?:\w+\s+){0,3}(?:schicken|senden|zusenden)\b", r"\b(?:schicken|senden)\s+sie\s+(?:mir\s+)?die\s+rechnung\b",
)


def _dispute_reason(folded: str) -> str | None:
    for reason, pattern in DISPUTE_REASONS:
        if pattern.search(folded):
            return reason
    return None


def classify(text: str, received_at: datetime | date) -> Classification:
    """Classify one reply. `received_at` anchors relative dates ("Friday", "end of month")."""
    today = received_at.date() if isinstance(received_at, datetime) else received_at
    folded = fold(text or "")
    if not folded.strip():
        return Classification("other", confidence=0.2)
    if is_stop(text):
        exact = " ".join(re.sub(r"[^\w\s'-]", " ", folded).split()) in STOP_KEYWORDS
        return Classification("stop", confidence=1.0 if exact else 0.9)
    if WRONG_CONTACT.search(folded):
        return Classification("wrong_contact", confidence=0.85)
    reason = _dispute_reason(folded)
    if reason is not None:
        return Classification("dispute", dispute_reason=reason, confidence=0.8)
    promised = PROMISE.search(folded) is not None
    if PAID.search(folded) and not (promised and PARTIAL.search(folded)):
        return Classification("paid_already", confidence=0.85)
    if promised:
        return Classification("promise_to_pay", promised_date=extract_date(text, today), confidence=0.8)
    if COPY.search(folded):
        return Classification("invoice_copy", confidence=0.85)
    return Classification("other", confidence=0.4)
