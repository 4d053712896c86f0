"""Users as tradelog keeps them: the rows it writes (:mod:`~tradelog._users.store`), the policy
for ids it has not seen (:mod:`~tradelog._users.registry`) and account files
(:mod:`~tradelog._users.accounts_file`)."""
