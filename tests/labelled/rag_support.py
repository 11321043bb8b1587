"""RAG support labelled set, written for this project: (response, retrieved context, supported by the context)."""

_REFUNDS = (
    "Refund policy: items returned within 30 days in their original packaging get a full refund to the original "
    "payment method. Refunds are processed within 5 business days after the return is received."
)
_SHIPPING = (
    "Shipping: standard delivery takes 3 to 5 business days and costs 4.99 EUR; orders above 50 EUR ship free. "
    "Express delivery arrives the next business day for 12.99 EUR."
)
_ACCOUNT = (
    "To reset a password, open Settings, choose Security, and click Reset password. A link valid for 24 hours is "
    "sent to the account's e-mail address."
)
_PLANS = (
    "The Basic plan costs 9 dollars per month for one user. The Team plan costs 29 dollars per month for up to "
    "five users and includes priority support and shared folders."
)
_WARRANTY = (
    "The warranty covers manufacturing defects for two years from the purchase date. Accidental damage, water "
    "damage and normal wear are not covered."
)

CASES: list[tuple[str, str, bool]] = [
    ("Items returned within 30 days get a full refund to the original payment method.", _REFUNDS, True),
    ("Refunds are processed within 5 business days after we receive the return.", _REFUNDS, True),
    ("You get a full refund if you return the item in its original packaging within 30 days.", _REFUNDS, True),
    ("Return it within 30 days and the refund goes to your original payment method.", _REFUNDS, True),
    ("Standard delivery takes 3 to 5 business days and costs 4.99 EUR.", _SHIPPING, True),
    ("Orders above 50 EUR ship free.", _SHIPPING, True),
    ("Express delivery arrives the next business day and costs 12.99 EUR.", _SHIPPING, True),
    ("Shipping is free for orders above 50 EUR; otherwise standard delivery costs 4.99 EUR.", _SHIPPING, True),
    ("Open Settings, choose Security and click Reset password.", _ACCOUNT, True),
    ("A reset link is sent to your account e-mail address and is valid for 24 hours.", _ACCOUNT, True),
    ("To reset your password go to Settings, then Security, then Reset password.", _ACCOUNT, True),
    ("The reset link stays valid for 24 hours.", _ACCOUNT, True),
    ("The Basic plan costs 9 dollars per month for one user.", _PLANS, True),
    ("The Team plan costs 29 dollars per month for up to five users.", _PLANS, True),
    ("Priority support and shared folders come with the Team plan.", _PLANS, True),
    ("For one user, Basic is 9 dollars per month; Team covers five users for 29 dollars.", _PLANS, True),
    ("Manufacturing defects are covered for two years from the purchase date.", _WARRANTY, True),
    ("Accidental damage and water damage are not covered by the warranty.", _WARRANTY, True),
    ("The warranty lasts two years and covers manufacturing defects.", _WARRANTY, True),
    ("Normal wear is not covered by the warranty.", _WARRANTY, True),
    ("Yes. Items returned within 30 days get a full refund.", _REFUNDS, True),
    ("Sure! Express delivery arrives the next business day.", _SHIPPING, True),
    ("Click Reset password under Security in Settings.", _ACCOUNT, True),
    ("Shared folders are included in the Team plan.", _PLANS, True),
    ("The warranty covers defects from manufacturing for two years.", _WARRANTY, True),
    ("Refunds go back to the original payment method.", _REFUNDS, True),
    # unsupported: the answer's facts are not in the context
    ("Refunds are issued as store credit within 90 days, and opened items incur a restocking fee.", _REFUNDS, False),
    ("We refund in cash at any branch, usually the same afternoon.", _REFUNDS, False),
    ("Store credit vouchers expire after twelve months unless renewed online.", _REFUNDS, False),
    ("Delivery to Canada takes two weeks and customs fees apply.", _SHIPPING, False),
    ("Drone delivery is available in selected cities for a small surcharge.", _SHIPPING, False),
    ("Pickup lockers hold parcels for seven days before returning them.", _SHIPPING, False),
    ("Call our hotline and an agent will unlock your profile after verifying your identity.", _ACCOUNT, False),
    ("Two-factor authentication codes arrive by SMS and expire after ten minutes.", _ACCOUNT, False),
    ("Biometric login can be enabled from the mobile app's fingerprint menu.", _ACCOUNT, False),
    ("The Enterprise tier offers unlimited seats, single sign-on and a dedicated manager.", _PLANS, False),
    ("Students get a 50 percent discount with a valid university ID.", _PLANS, False),
    ("Annual billing saves two months compared with monthly billing.", _PLANS, False),
    ("Extended protection adds three more years and covers drops and spills.", _WARRANTY, False),
    ("Batteries are replaced free of charge for five years.", _WARRANTY, False),
    ("Screen cracks are repaired at any authorised partner within 48 hours.", _WARRANTY, False),
    ("The capital of Australia is Canberra.", _REFUNDS, False),
    ("Photosynthesis turns light, water and carbon dioxide into glucose and oxygen.", _SHIPPING, False),
    ("The recipe needs flour, eggs, milk and a pinch of salt.", _ACCOUNT, False),
    ("Mount Everest is 8,849 metres tall.", _PLANS, False),
    ("Jupiter has dozens of moons, including Ganymede and Europa.", _WARRANTY, False),
    ("Our office in Lisbon opens at nine and closes at six.", _REFUNDS, False),
    ("Gift cards cannot be exchanged for cash or used abroad.", _SHIPPING, False),
    ("Passwords must contain a symbol, a digit and twelve characters.", _ACCOUNT, False),
    ("Nonprofits qualify for a free tier after an application review.", _PLANS, False),
    ("Loaner devices are provided while repairs take longer than a week.", _WARRANTY, False),
    ("Customers in Japan pay in yen and receive invoices by post.", _REFUNDS, False),
]
